"""The media sync CronJob: its schedule, its Jobs and their pods, logs, manual runs, suspend/resume."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import random
import string
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from immich_tui.services import clock
from immich_tui.services.kube import Access, Kube, NotFound

DEFAULT_CRONJOB = "immich-media-offsite-sync"
RESTORER_SECRET = "immich-offsite-restorer"
RESTORE_MOUNT = "/target"
RESTORE_NAME = "immich-media-restore"
JOB_LIMIT = 20  # Jobs shown by default; the history is listed in full (paginated) to sort it


@dataclass
class CronJobInfo:
    name: str
    namespace: str
    schedule: str
    timezone: str
    suspended: bool
    last_schedule: dt.datetime | None
    last_success: dt.datetime | None
    next_run: dt.datetime | None
    active: list[str]
    image: str
    uid: str
    schedule_error: str = ""


@dataclass
class JobInfo:
    name: str
    status: str  # running | succeeded | failed | pending | suspended
    started: dt.datetime | None
    finished: dt.datetime | None
    duration_seconds: float | None
    pod: str
    exit_reason: str
    exit_code: int | None
    manual: bool
    created: dt.datetime | None = None


@dataclass
class JobHistory:
    cronjob: CronJobInfo
    jobs: list[JobInfo]
    total: int
    counts: dict[str, int] = field(default_factory=dict)


def next_run(schedule: str, timezone: str, after: dt.datetime) -> tuple[dt.datetime | None, str]:
    """The next time the CronJob controller starts a Job; `(None, reason)` for a schedule it rejects."""
    if schedule.startswith("TZ=") or schedule.startswith("CRON_TZ="):
        return None, "the schedule embeds a timezone, which Kubernetes rejects; use spec.timeZone"
    try:
        zone = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return None, f"unknown timeZone {timezone!r}"
    try:
        it = croniter(schedule, after.astimezone(zone))
        return it.get_next(dt.datetime).astimezone(dt.UTC), ""
    except (ValueError, KeyError) as exc:
        return None, f"invalid schedule {schedule!r}: {exc}"


def _cronjob_info(obj: dict[str, Any]) -> CronJobInfo:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    containers = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    schedule, zone = spec.get("schedule", ""), spec.get("timeZone") or ""
    upcoming, problem = next_run(schedule, zone, clock.now())
    return CronJobInfo(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        schedule=schedule,
        timezone=zone or "controller's local time (usually UTC)",
        suspended=bool(spec.get("suspend")),
        last_schedule=clock.parse(status.get("lastScheduleTime")),
        last_success=clock.parse(status.get("lastSuccessfulTime")),
        next_run=None if spec.get("suspend") else upcoming,
        active=[ref.get("name", "") for ref in status.get("active") or []],
        image=containers[0].get("image", "") if containers else "",
        uid=meta.get("uid", ""),
        schedule_error=problem,
    )


def _job_info(obj: dict[str, Any], pod: dict[str, Any] | None) -> JobInfo:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    started = clock.parse(status.get("startTime"))
    finished = clock.parse(status.get("completionTime"))
    reason, code = "", None
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        state = "succeeded"
    elif "Failed" in conditions or "FailureTarget" in conditions:
        state = "failed"
        failed = conditions.get("Failed") or conditions.get("FailureTarget") or {}
        reason = failed.get("reason", "") or "Failed"
        finished = finished or clock.parse(failed.get("lastTransitionTime"))
    elif spec.get("suspend"):
        state = "suspended"
    elif status.get("active"):
        state = "running"
    else:
        state = "pending"
    pod_reason, code = _pod_exit(pod)
    if pod_reason and (state != "succeeded"):
        reason = f"{reason}: {pod_reason}" if reason and pod_reason not in reason else (reason or pod_reason)
    end = finished or (clock.now() if state == "running" and started else None)
    return JobInfo(
        name=meta.get("name", ""),
        status=state,
        started=started,
        finished=finished,
        duration_seconds=(end - started).total_seconds() if started and end else None,
        pod=(pod or {}).get("metadata", {}).get("name", ""),
        exit_reason=reason,
        exit_code=code,
        manual=(meta.get("annotations") or {}).get("cronjob.kubernetes.io/instantiate") == "manual",
        created=clock.parse(meta.get("creationTimestamp")),
    )


def _pod_exit(pod: dict[str, Any] | None) -> tuple[str, int | None]:
    """Why the sync container stopped or cannot start (OOMKilled, exit 2, CreateContainerConfigError…)."""
    if not pod:
        return "", None
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "terminated" in state:
            term = state["terminated"]
            code = term.get("exitCode")
            if code:
                return f"{term.get('reason') or 'Error'} (exit {code})", code
            return "", code
        if "waiting" in state and state["waiting"].get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            waiting = state["waiting"]
            return f"{waiting.get('reason')}: {waiting.get('message', '')}".rstrip(": "), None
    if (pod.get("status") or {}).get("phase") == "Pending":
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return f"Unschedulable: {cond.get('message', '')}".rstrip(": "), None
    return "", None


def _newest(items: list[dict[str, Any]], key: str = "creationTimestamp") -> list[dict[str, Any]]:
    return sorted(items, key=lambda o: (o.get("metadata", {}).get(key) or "", o["metadata"]["name"]), reverse=True)


class MediaBackup:
    """What the operator does with the CronJob, read and written through `Kube`."""

    def __init__(self, kube: Kube, namespace: str = "immich", cronjob: str = DEFAULT_CRONJOB) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = cronjob

    def _raw_cronjob(self) -> dict[str, Any]:
        access = Access("get", "cronjobs", self.namespace, "batch", name=self.name)
        try:
            return self.kube.call(access, self.kube.batch.read_namespaced_cron_job, self.name, self.namespace)
        except NotFound:
            raise NotFound(
                f"CronJob {self.namespace}/{self.name} not found (wrong --namespace or --cronjob?)"
            ) from None

    def cronjob(self) -> CronJobInfo:
        return _cronjob_info(self._raw_cronjob())

    def _owned_jobs(self, raw: dict[str, Any]) -> list[dict[str, Any]]:
        """The CronJob's Jobs, selected by its jobTemplate labels when it has them, owner-checked."""
        labels = raw.get("spec", {}).get("jobTemplate", {}).get("metadata", {}).get("labels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        uid = raw.get("metadata", {}).get("uid")
        jobs = self.kube.list(
            Access("list", "jobs", self.namespace, "batch"),
            self.kube.batch.list_namespaced_job,
            self.namespace,
            label_selector=selector,
        )
        return [
            job
            for job in jobs
            if any(
                ref.get("kind") == "CronJob" and (ref.get("uid") == uid or ref.get("name") == self.name)
                for ref in job.get("metadata", {}).get("ownerReferences") or []
            )
        ]

    def _pods_of(self, job_names: list[str]) -> dict[str, dict[str, Any]]:
        """The newest pod of each Job, in one list call scoped by the `job-name` label."""
        if not job_names:
            return {}
        selector = f"job-name in ({','.join(job_names)})"
        pods = self.kube.list(
            Access("list", "pods", self.namespace),
            self.kube.core.list_namespaced_pod,
            self.namespace,
            label_selector=selector,
        )
        newest: dict[str, dict[str, Any]] = {}
        for pod in _newest(list(pods)):
            job = (pod.get("metadata", {}).get("labels") or {}).get("job-name", "")
            newest.setdefault(job, pod)
        return newest

    def _restore_jobs(self) -> list[dict[str, Any]]:
        """Media restore Jobs are not the CronJob's, but their logs belong in the same history."""
        return list(
            self.kube.list(
                Access("list", "jobs", self.namespace, "batch"),
                self.kube.batch.list_namespaced_job,
                self.namespace,
                label_selector=f"app.kubernetes.io/name={RESTORE_NAME}",
                max_items=50,
            )
        )

    def history(self, limit: int = JOB_LIMIT) -> JobHistory:
        raw = self._raw_cronjob()
        jobs = _newest(self._owned_jobs(raw) + self._restore_jobs())
        shown = jobs[:limit]
        pods = self._pods_of([j["metadata"]["name"] for j in shown])
        infos = [_job_info(job, pods.get(job["metadata"]["name"])) for job in shown]
        counts: dict[str, int] = {}
        for job in jobs:
            state = _job_info(job, None).status
            counts[state] = counts.get(state, 0) + 1
        return JobHistory(_cronjob_info(raw), infos, len(jobs), counts)

    def job(self, name: str) -> JobInfo:
        access = Access("get", "jobs", self.namespace, "batch", name=name)
        try:
            raw = self.kube.call(access, self.kube.batch.read_namespaced_job, name, self.namespace)
        except NotFound:
            raise NotFound(f"Job {self.namespace}/{name} not found") from None
        return _job_info(raw, self._pods_of([name]).get(name))

    # Actions -------------------------------------------------------------------------------------
    def manual_job(self, raw: dict[str, Any], name: str) -> dict[str, Any]:
        """The Job `kubectl create job NAME --from=cronjob/…` creates: the jobTemplate's labels,
        annotations and spec, `cronjob.kubernetes.io/instantiate: manual`, and the CronJob as controller."""
        template = raw.get("spec", {}).get("jobTemplate", {})
        annotations = {"cronjob.kubernetes.io/instantiate": "manual"}
        annotations.update((template.get("metadata") or {}).get("annotations") or {})
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace, "annotations": annotations}
        if (template.get("metadata") or {}).get("labels"):
            meta["labels"] = copy.deepcopy(template["metadata"]["labels"])
        meta["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": raw["metadata"]["name"],
                "uid": raw["metadata"].get("uid", ""),
                "controller": True,
            }
        ]
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": copy.deepcopy(template.get("spec"))}

    def trigger(self) -> JobInfo:
        raw = self._raw_cronjob()
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = f"{self.name[: 63 - 13]}-manual-{suffix}"
        body = self.manual_job(raw, name)
        access = Access("create", "jobs", self.namespace, "batch")
        created = self.kube.write(access, self.kube.batch.create_namespaced_job, self.namespace, body)
        return _job_info(created, None)

    def restore_job(
        self,
        pvc: str,
        *,
        force: bool = False,
        only: str | None = None,
        as_of: dt.datetime | None = None,
        secret: str = RESTORER_SECRET,
    ) -> dict[str, Any]:
        """A Job that runs `immich-sync restore` into `pvc`, mounted read-write, with the restorer's
        read-only credentials. Image, pod security context and scheduling come from the sync CronJob,
        so it runs where and as the nightly sync runs."""
        raw = self._raw_cronjob()
        pod = raw.get("spec", {}).get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
        containers = pod.get("containers") or [{}]
        image = containers[0].get("image", "")
        if not image:
            raise NotFound(f"CronJob {self.namespace}/{self.name} names no container image to restore with")
        args = ["restore", "--to", RESTORE_MOUNT, "--log-format", "json"]
        if force:
            args.append("--force")
        if only:
            args += ["--only", only]
        if as_of is not None:  # the engine refuses a time without a zone: always send it in UTC
            args += ["--as-of", clock.iso(as_of) or ""]
        container: dict[str, Any] = {
            "name": "restore",
            "image": image,
            "args": args,
            "envFrom": [{"secretRef": {"name": secret}}],
            "volumeMounts": [{"name": "target", "mountPath": RESTORE_MOUNT}],
        }
        for key in ("securityContext", "resources", "imagePullPolicy"):
            if containers[0].get(key):
                container[key] = copy.deepcopy(containers[0][key])
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [{"name": "target", "persistentVolumeClaim": {"claimName": pvc}}],
        }
        for key in ("securityContext", "nodeSelector", "tolerations", "imagePullSecrets", "serviceAccountName"):
            if pod.get(key):
                spec[key] = copy.deepcopy(pod[key])
        stamp = clock.now().strftime("%Y%m%d-%H%M%S")
        # a second restore within the same second (a retry after a quick failure) must not collide
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        labels = {
            "app.kubernetes.io/name": "immich-media-restore",
            "app.kubernetes.io/part-of": "immich-offsite-backup",
        }
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"immich-media-restore-{stamp}-{suffix}",
                "namespace": self.namespace,
                "labels": labels,
            },
            "spec": {
                "backoffLimit": 2,  # a restore resumes where it stopped, so a retry is cheap
                # ...but not after a configuration error (2) or with only archived objects pending (4):
                # another pod right away would end the same way.
                "podFailurePolicy": {
                    "rules": [
                        {
                            "action": "FailJob",
                            "onExitCodes": {"containerName": "restore", "operator": "In", "values": [2, 4]},
                        }
                    ]
                },
                "ttlSecondsAfterFinished": 7 * 86400,
                "template": {"metadata": {"labels": dict(labels)}, "spec": spec},
            },
        }

    def start_restore(
        self, pvc: str, *, force: bool = False, only: str | None = None, as_of: dt.datetime | None = None
    ) -> JobInfo:
        """Create the media restore Job (the engine's `immich-sync restore`, as of a time when given); the
        database's point-in-time recovery is `services.recovery`."""
        body = self.restore_job(pvc, force=force, only=only, as_of=as_of)
        access = Access("create", "jobs", self.namespace, "batch")
        created = self.kube.write(access, self.kube.batch.create_namespaced_job, self.namespace, body)
        return _job_info(created, None)

    def set_suspended(self, suspended: bool) -> CronJobInfo:
        access = Access("patch", "cronjobs", self.namespace, "batch", name=self.name)
        patched = self.kube.write(
            access,
            self.kube.batch.patch_namespaced_cron_job,
            self.name,
            self.namespace,
            {"spec": {"suspend": suspended}},
            # the client would label a dict body as a JSON Patch, which the API server rejects
            _content_type="application/merge-patch+json",
        )
        return _cronjob_info(patched)

    def wait_for_pod(self, job: str, timeout: float = 300.0, poll: float = 1.0) -> dict[str, Any] | None:
        """The Job's pod once it exists and has left Pending (or `None` when the Job ended without one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pod = self._pods_of([job]).get(job)
            if pod and (pod.get("status") or {}).get("phase") not in (None, "Pending"):
                return pod
            info = self.job(job)
            if info.status in ("succeeded", "failed"):
                return pod
            time.sleep(poll)
        return None

    def wait_for_job(self, job: str, timeout: float = 6 * 3600.0, poll: float = 1.0) -> JobInfo:
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job)
            if info.status in ("succeeded", "failed") or time.monotonic() > deadline:
                return info
            time.sleep(poll)

    def logs(self, pod: str, *, follow: bool = False, tail: int | None = 200) -> LogStream:
        access = Access("get", "pods", self.namespace, subresource="log", name=pod)
        kwargs: dict[str, Any] = {"follow": follow}
        if tail is not None:
            kwargs["tail_lines"] = tail
        response = self.kube.stream(access, self.kube.core.read_namespaced_pod_log, pod, self.namespace, **kwargs)
        return LogStream(response)

    def newest_job_pod(self, job: str | None) -> tuple[str, str]:
        """(job, pod) for `logs [JOB]`: the named Job, else the newest one."""
        if job is None:
            history = self.history(limit=1)
            if not history.jobs:
                raise NotFound(f"CronJob {self.namespace}/{self.name} has no Jobs yet")
            job = history.jobs[0].name
            pod = history.jobs[0].pod
        else:
            pod = self.job(job).pod
        if not pod:
            raise NotFound(f"Job {self.namespace}/{job} has no pod (it may not have started or was cleaned up)")
        return job, pod


class LogStream:
    """Lines of a pod log as they arrive; `close()` from any thread stops a follow."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[str]:
        pending = b""
        try:
            for chunk in self._response.stream(64 * 1024, decode_content=True):
                if self._closed.is_set():
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
            if pending and not self._closed.is_set():
                yield pending.decode("utf-8", "replace")
        except Exception:
            if not self._closed.is_set():
                raise
        finally:
            self._response.release_conn()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(Exception):  # the connection may already be gone; closing is best effort
            if hasattr(self._response, "shutdown"):
                self._response.shutdown()
            else:
                self._response.close()
