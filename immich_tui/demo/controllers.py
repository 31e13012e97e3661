"""Two small controllers that stand in for Kubernetes and CNPG in the sandbox.

A new Job of the CronJob gets a pod that really runs `immich-sync` on the sample library into the local
S3 (its output is the pod log); a new CNPG Backup runs through its phases to `completed`.

A Job whose pod mounts a Secret as a volume (the media restore Job reads the restorer's keys that way) gets
that Secret from the emulated API server, laid out as the kubelet lays it out (a file per key behind a
`..data` link, the volume's defaultMode) in a scratch directory that stands in for the mount path; the
engine then runs with no key in its environment, exactly as in the cluster. A Job that mounts none (the
sandbox's own CronJob) runs with the sandbox's keys in its environment, as before.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immich_tui.demo.emulator import EmulatorServer, PodLog
from immich_tui.demo.fixtures import CRONJOB, DB_NS, NS, iso, job, job_pod
from immich_tui.services import clock


@dataclass
class SyncTarget:
    """Where a sandbox Job's `immich-sync backup` writes: the local S3 and the sample library."""

    endpoint: str
    bucket: str
    media_prefix: str
    library: Path
    access_key: str
    secret_key: str
    extra_env: dict[str, str] = field(default_factory=dict)
    restore_root: Path | None = None  # where a restore Job's `/target` volume lives

    def env(self, *, secret: bool = True) -> dict[str, str]:
        """The engine's environment; without `secret`, none of what the Secret provides (keys, region,
        endpoint, bucket, prefix): a pod that mounts its Secret reads those from the files."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IMMICH_SYNC_"))}
        if secret:
            base.update(
                {
                    "AWS_ACCESS_KEY_ID": self.access_key,
                    "AWS_SECRET_ACCESS_KEY": self.secret_key,
                    "AWS_REGION": "us-east-1",
                    "AWS_ENDPOINT_URL_S3": self.endpoint,
                    "BUCKET_NAME": self.bucket,
                    "MEDIA_PREFIX": self.media_prefix,
                }
            )
        base.update({"LIBRARY_ROOT": str(self.library), "IMMICH_SYNC_SETTLE_SECONDS": "0"})
        base.update(self.extra_env)
        return base


_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class PodRun:
    """What one emulated pod ran, for the tests: its arguments, its environment (any key's value redacted)
    and the Secrets it mounted, by mount path."""

    job: str
    args: list[str]
    env: dict[str, str]
    secrets: dict[str, str]


class SecretMissing(Exception):
    """The pod mounts a Secret the API server does not hold: the kubelet would never start it."""


def _secret_volumes(
    server: EmulatorServer, spec: dict[str, Any], container: dict[str, Any], root: Path
) -> dict[str, tuple[str, Path]]:
    """Each Secret the container mounts, materialised under `root` as the kubelet would mount it:
    mount path -> (the Secret's name, the directory standing in for it)."""
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    out: dict[str, tuple[str, Path]] = {}
    for volume in spec.get("volumes", []):
        source = volume.get("secret")
        if source is None or volume["name"] not in mounts:
            continue
        name = source["secretName"]
        secret = server.get("v1/secrets", NS, name)
        if secret is None:
            raise SecretMissing(f'MountVolume.SetUp failed for volume "{volume["name"]}": secret "{name}" not found')
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        data |= {k: v.encode() for k, v in (secret.get("stringData") or {}).items()}
        items = {i["key"]: i["path"] for i in source.get("items", [])} or {k: k for k in data}
        folder = root / volume["name"]
        stamp = folder / "..2026_01_01_00_00_00.000000001"
        stamp.mkdir(parents=True)
        for key, path in items.items():
            (stamp / path).write_bytes(data[key])
            (stamp / path).chmod(source.get("defaultMode", 0o644))
            (folder / path).symlink_to(f"..data/{path}")
        (folder / "..data").symlink_to(stamp.name)
        out[mounts[volume["name"]]] = (name, folder)
    return out


class JobController:
    """Gives each new Job of the CronJob a pod that runs `immich-sync backup` for real, then records the
    outcome on the pod, the Job and the CronJob as Kubernetes would."""

    def __init__(
        self, server: EmulatorServer, target: SyncTarget | None, runner: Callable[[SyncTarget], list[str]] | None = None
    ) -> None:
        self.server = server
        self.target = target
        self.threads: list[threading.Thread] = []
        self.runs: list[PodRun] = []
        server.emulator.on_create.append(self._created)

    def _created(self, plural: str, obj: dict[str, Any]) -> None:
        if plural != "jobs":
            return
        thread = threading.Thread(target=self._run, args=(obj,), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _run(self, job_obj: dict[str, Any]) -> None:
        name = job_obj["metadata"]["name"]
        start = clock.now()
        pod = job_pod(name, start, "running")
        pod_name = pod["metadata"]["name"]
        log = PodLog()
        self.server.emulator.pod_logs[(NS, pod_name)] = log
        time.sleep(0.2)  # the controller's reaction time: the Job exists before its pod does
        self.server.put("v1/pods", pod)
        self.server.patch("batch/v1/jobs", NS, name, {"status": {"startTime": iso(start), "active": 1}})
        code = self._execute(log, job_obj)
        end = clock.now()
        state = "succeeded" if code == 0 else "failed"
        finished = job_pod(name, start, state, exit_code=code)
        self.server.patch("v1/pods", NS, pod_name, {"status": finished["status"]})
        log.finish()
        done = job(name, "", start, state, seconds=max(1, int((end - start).total_seconds())))
        self.server.patch("batch/v1/jobs", NS, name, {"status": {**done["status"], "active": 0}})
        if state == "succeeded" and self._owner_cronjob(job_obj) is not None:
            self.server.patch("batch/v1/cronjobs", NS, CRONJOB, {"status": {"lastSuccessfulTime": iso(end)}})

    def _owner_cronjob(self, job_obj: dict[str, Any]) -> dict[str, Any] | None:
        """The CronJob that controls this Job, as the CronJob controller tells its own Jobs: an owner
        reference to it, by uid, as controller. Only such a Job's success is the CronJob's `lastSuccessfulTime`;
        a media restore Job, or one someone created by hand without the reference, is none of its business."""
        cronjob = self.server.get("batch/v1/cronjobs", NS, CRONJOB)
        if cronjob is None:
            return None
        uid = cronjob.get("metadata", {}).get("uid")
        refs = job_obj.get("metadata", {}).get("ownerReferences") or []
        owned = any(
            ref.get("kind") == "CronJob" and ref.get("uid") == uid and ref.get("controller") is True for ref in refs
        )
        return cronjob if owned else None

    def _execute(self, log: PodLog, job_obj: dict[str, Any]) -> int:
        """The Job's own container arguments and environment, with its volumes mapped to sandbox directories
        and its Secret volumes materialised as files."""
        if self.target is None:
            log.write('{"level": "error", "event": "config", "error": "no S3 endpoint in this sandbox"}')
            return 2
        spec = job_obj.get("spec", {}).get("template", {}).get("spec", {})
        container = (spec.get("containers") or [{}])[0]
        args = list(container.get("args") or ["backup", "--log-format", "json"])
        volumes = {"/library": str(self.target.library)}
        if self.target.restore_root is not None:
            volumes["/target"] = str(self.target.restore_root)
        with tempfile.TemporaryDirectory(prefix="immich-sandbox-secrets-") as scratch:
            try:
                secrets = _secret_volumes(self.server, spec, container, Path(scratch))
            except SecretMissing as exc:
                log.write(json.dumps({"level": "error", "event": "mount", "error": str(exc)}))
                return 2
            volumes |= {path: str(folder) for path, (_, folder) in secrets.items()}
            env = self.target.env(secret=not secrets)
            for item in container.get("env", []):
                if "value" in item:
                    env[item["name"]] = volumes.get(item["value"], item["value"])
            args = [volumes.get(arg, arg) for arg in args]
            shown = {k: "<redacted>" if k in _CREDENTIALS else v for k, v in env.items()}
            names = {path: name for path, (name, _) in secrets.items()}
            self.runs.append(PodRun(job_obj["metadata"]["name"], args, shown, names))
            proc = subprocess.Popen(
                [sys.executable, "-m", "sync_engine", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
            return proc.wait()

    def join(self, timeout: float = 120.0) -> None:
        for thread in self.threads:
            thread.join(timeout)


class BackupController:
    """Moves a new CNPG Backup through running to completed and updates the recovery window."""

    def __init__(self, server: EmulatorServer, *, fail: bool = False, seconds: float = 0.5) -> None:
        self.server = server
        self.fail = fail
        self.seconds = seconds
        self.threads: list[threading.Thread] = []
        server.emulator.on_create.append(self._created)

    def _created(self, plural: str, obj: dict[str, Any]) -> None:
        if plural == "backups":
            thread = threading.Thread(target=self._run, args=(obj["metadata"]["name"],), daemon=True)
            self.threads.append(thread)
            thread.start()

    def join(self, timeout: float = 30.0) -> None:
        for thread in self.threads:
            thread.join(timeout)

    def _run(self, name: str) -> None:
        start = clock.now()
        time.sleep(0.1)
        self.server.patch(
            "postgresql.cnpg.io/v1/backups",
            DB_NS,
            name,
            {
                "status": {
                    "phase": "running",
                    "startedAt": iso(start),
                    "serverName": "immich-db-2026",
                    "backupId": start.strftime("%Y%m%dT%H%M%S"),
                }
            },
        )
        time.sleep(self.seconds)
        end = clock.now()
        status: dict[str, Any] = {"phase": "failed" if self.fail else "completed", "stoppedAt": iso(end)}
        if self.fail:
            status["error"] = "can't execute backup: exit status 4"
        self.server.patch("postgresql.cnpg.io/v1/backups", DB_NS, name, {"status": status})
