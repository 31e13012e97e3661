"""The media sync CronJob: its schedule, its Jobs and their pods, logs, manual runs, suspend/resume.

Every CronJob, Job and Pod is read through `schema.View`: a field of the wrong type is an `InvalidObject`
naming the object and the field, never a traceback."""

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
from immich_tui.services.errors import InvalidData
from immich_tui.services.kube import Access, Kube, NotFound
from immich_tui.services.schema import View

DEFAULT_CRONJOB = "immich-media-offsite-sync"
RESTORER_SECRET = "immich-offsite-restorer"
RESTORE_MOUNT = "/target"
# Where a restore Job mounts the restorer's Secret, as deploy/base and deploy/overlays/restore do: the engine
# reads its keys from these files (IMMICH_SYNC_SECRETS_DIR), so they never enter the pod's environment.
SECRETS_MOUNT = "/var/run/secrets/immich-offsite"
IMAGE_GROUP = 65532  # the image's user and group (deploy/image/Dockerfile, `USER 65532:65532`)
RESTORE_NAME = "immich-media-restore"
# When `suspend` suspended the CronJob (RFC 3339, UTC); `resume` removes it. Anyone who can patch the
# CronJob can write it, so it is a claim to check, not a fact (see `_suspended_since`).
SUSPENDED_AT = "immich-offsite-backup/suspended-at"
# How far the annotation (this machine's clock) may trail the API server's record of the same update.
_SUSPEND_SKEW = dt.timedelta(minutes=5)
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
    # when the CronJob was suspended, when that is knowable; None when it runs or the time is unknown
    suspended_since: dt.datetime | None = None


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
    # "sync" for the CronJob's own runs, "restore" for a media restore: a restore shows in the history
    # but says nothing about whether the offsite copy is current.
    kind: str = "sync"


@dataclass
class JobHistory:
    cronjob: CronJobInfo
    jobs: list[JobInfo]
    total: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def latest_sync(self) -> JobInfo | None:
        """The newest run of the sync itself: the one a verdict about the offsite copy may rest on."""
        return next((job for job in self.jobs if job.kind == "sync"), None)


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
    except (ValueError, KeyError, OverflowError) as exc:
        return None, f"invalid schedule {schedule!r}: {exc}"


def _view(kind: str, obj: object) -> View:
    return obj if isinstance(obj, View) else View.of(kind, obj)


def _cronjob_info(obj: object) -> CronJobInfo:
    cronjob = _view("CronJob", obj)
    meta, spec, status = cronjob.map("metadata"), cronjob.map("spec"), cronjob.map("status")
    containers = spec.map("jobTemplate").map("spec").map("template").map("spec").maps("containers")
    schedule, zone = spec.text("schedule"), spec.text("timeZone")
    suspended = spec.flag("suspend")
    now = clock.now()
    upcoming, problem = next_run(schedule, zone, now)
    return CronJobInfo(
        name=meta.text("name"),
        namespace=meta.text("namespace"),
        schedule=schedule,
        timezone=zone or "controller's local time (usually UTC)",
        suspended=suspended,
        last_schedule=status.time("lastScheduleTime"),
        last_success=status.time("lastSuccessfulTime"),
        next_run=None if suspended else upcoming,
        active=[ref.text("name") for ref in status.maps("active")],
        image=containers[0].text("image") if containers else "",
        uid=meta.text("uid"),
        schedule_error=problem,
        suspended_since=_suspended_since(meta, now) if suspended else None,
    )


def _suspend_update_time(meta: View) -> dt.datetime | None:
    """The API server's time of the last update that set `spec.suspend`: the managedFields entry owning it."""
    times = []
    for entry in meta.maps("managedFields"):
        fields = entry.map("fieldsV1")
        if fields.map("f:spec").has("f:suspend"):
            times.append(entry.time("time"))
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _suspended_since(meta: View, now: dt.datetime) -> dt.datetime | None:
    """When a suspended CronJob was suspended, or None when that cannot be told.

    Our `suspend` records the time in an annotation; anyone who can patch the CronJob can write it, and a
    suspension made some other way leaves an old one behind. So it is believed only when it is a time, not
    in the future, not before the CronJob existed, and not older than the API server's own record of the
    update that last set `spec.suspend`; otherwise that record (managedFields) is the answer, if present."""
    try:
        updated = _suspend_update_time(meta)
    except InvalidData:  # managedFields that are not what the API server writes vouch for nothing
        updated = None
    if updated is not None and updated > now + _SUSPEND_SKEW:
        updated = None
    raw = meta.raw("annotations")
    claimed = clock.parse(raw.get(SUSPENDED_AT)) if isinstance(raw, dict) else None
    created = meta.time("creationTimestamp")
    if claimed is not None and (claimed > now or (created is not None and claimed < created)):
        claimed = None
    if claimed is not None and updated is not None and claimed + _SUSPEND_SKEW < updated:
        claimed = None  # suspended again since, by something that did not write the annotation
    return claimed or updated


def _job_info(obj: object, pod: object | None) -> JobInfo:
    job = _view("Job", obj)
    meta, spec, status = job.map("metadata"), job.map("spec"), job.map("status")
    conditions = {c.text("type"): c for c in status.maps("conditions") if c.text("status") == "True"}
    started = status.time("startTime")
    finished = status.time("completionTime")
    reason, code = "", None
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        state = "succeeded"
    elif "Failed" in conditions or "FailureTarget" in conditions:
        state = "failed"
        failed = conditions.get("Failed") or conditions["FailureTarget"]
        reason = failed.text("reason") or "Failed"
        finished = finished or failed.time("lastTransitionTime")
    elif spec.flag("suspend"):
        state = "suspended"
    elif status.count("active"):
        state = "running"
    else:
        state = "pending"
    pod_view = _view("Pod", pod) if pod is not None else None
    pod_reason, code = _pod_exit(pod_view)
    if pod_reason and (state != "succeeded"):
        reason = f"{reason}: {pod_reason}" if reason and pod_reason not in reason else (reason or pod_reason)
    end = finished or (clock.now() if state == "running" and started else None)
    return JobInfo(
        name=meta.text("name"),
        status=state,
        started=started,
        finished=finished,
        duration_seconds=(end - started).total_seconds() if started and end else None,
        pod=pod_view.map("metadata").text("name") if pod_view is not None else "",
        exit_reason=reason,
        exit_code=code,
        manual=meta.text_map("annotations").get("cronjob.kubernetes.io/instantiate") == "manual",
        created=meta.time("creationTimestamp"),
        kind=_kind(job),
    )


def _pod_exit(pod: View | None) -> tuple[str, int | None]:
    """Why the sync container stopped or cannot start (OOMKilled, exit 2, CreateContainerConfigError…)."""
    if pod is None:
        return "", None
    status = pod.map("status")
    for cs in status.maps("containerStatuses"):
        state = cs.map("state")
        if state.has("terminated"):
            term = state.map("terminated")
            code = term.integer("exitCode")
            if code:
                return f"{term.text('reason') or 'Error'} (exit {code})", code
            return "", code
        waiting = state.map("waiting")
        if state.has("waiting") and waiting.text("reason") not in ("", "ContainerCreating", "PodInitializing"):
            return f"{waiting.text('reason')}: {waiting.text('message')}".rstrip(": "), None
    if status.text("phase") == "Pending":
        for cond in status.maps("conditions"):
            if cond.text("type") == "PodScheduled" and cond.text("status") == "False":
                return f"Unschedulable: {cond.text('message')}".rstrip(": "), None
    return "", None


def _kind(job: View) -> str:
    """A media restore Job is told apart by the label `restore_job` gives it: listed with the syncs, it is
    never judged as one."""
    labels = job.map("metadata").text_map("labels")
    return "restore" if labels.get("app.kubernetes.io/name") == RESTORE_NAME else "sync"


def _name(obj: View) -> str:
    return obj.map("metadata").text("name")


def _newest(items: list[View], key: str = "creationTimestamp") -> list[View]:
    return sorted(items, key=lambda o: (o.map("metadata").text(key), _name(o)), reverse=True)


class MediaBackup:
    """What the operator does with the CronJob, read and written through `Kube`."""

    def __init__(self, kube: Kube, namespace: str = "immich", cronjob: str = DEFAULT_CRONJOB) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = cronjob

    def _raw_cronjob(self) -> View:
        access = Access("get", "cronjobs", self.namespace, "batch", name=self.name)
        try:
            raw = self.kube.call(access, self.kube.batch.read_namespaced_cron_job, self.name, self.namespace)
        except NotFound:
            raise NotFound(
                f"CronJob {self.namespace}/{self.name} not found (wrong --namespace or --cronjob?)"
            ) from None
        return View.of("CronJob", raw, namespace=self.namespace)

    def cronjob(self) -> CronJobInfo:
        return _cronjob_info(self._raw_cronjob())

    def _owned_jobs(self, raw: View) -> list[View]:
        """The CronJob's Jobs, selected by its jobTemplate labels when it has them, owner-checked."""
        labels = raw.map("spec").map("jobTemplate").map("metadata").text_map("labels")
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        uid = raw.map("metadata").text("uid")
        jobs = self.kube.list(
            Access("list", "jobs", self.namespace, "batch"),
            self.kube.batch.list_namespaced_job,
            self.namespace,
            label_selector=selector,
        )
        return [
            job
            for job in (View.of("Job", item, namespace=self.namespace) for item in jobs)
            if any(
                ref.text("kind") == "CronJob" and (ref.text("uid") == uid or ref.text("name") == self.name)
                for ref in job.map("metadata").maps("ownerReferences")
            )
        ]

    def _pods_of(self, job_names: list[str]) -> dict[str, View]:
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
        newest: dict[str, View] = {}
        for pod in _newest([View.of("Pod", item, namespace=self.namespace) for item in pods]):
            job = pod.map("metadata").text_map("labels").get("job-name", "")
            newest.setdefault(job, pod)
        return newest

    def _restore_jobs(self) -> list[View]:
        """Media restore Jobs are not the CronJob's, but their logs belong in the same history."""
        return [
            View.of("Job", item, namespace=self.namespace)
            for item in self.kube.list(
                Access("list", "jobs", self.namespace, "batch"),
                self.kube.batch.list_namespaced_job,
                self.namespace,
                label_selector=f"app.kubernetes.io/name={RESTORE_NAME}",
                max_items=50,
            )
        ]

    def history(self, limit: int = JOB_LIMIT) -> JobHistory:
        raw = self._raw_cronjob()
        jobs = _newest(self._owned_jobs(raw) + self._restore_jobs())
        shown = jobs[:limit]
        syncs = [job for job in jobs if _kind(job) == "sync"]
        if limit > 0 and syncs and all(_kind(job) == "restore" for job in shown):
            # restores run after the last sync must not push it, and whether it failed, out of the verdict
            shown = [*jobs[: limit - 1], syncs[0]]
        pods = self._pods_of([_name(j) for j in shown])
        infos = [_job_info(job, pods.get(_name(job))) for job in shown]
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
        return _job_info(View.of("Job", raw, namespace=self.namespace), self._pods_of([name]).get(name))

    # Actions -------------------------------------------------------------------------------------
    def manual_job(self, raw: dict[str, Any] | View, name: str) -> dict[str, Any]:
        """The Job `kubectl create job NAME --from=cronjob/…` creates: the jobTemplate's labels,
        annotations and spec, `cronjob.kubernetes.io/instantiate: manual`, and the CronJob as controller."""
        cronjob = _view("CronJob", raw)
        template = cronjob.map("spec").map("jobTemplate")
        annotations = {"cronjob.kubernetes.io/instantiate": "manual"}
        annotations.update(template.map("metadata").text_map("annotations"))
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace, "annotations": annotations}
        labels = template.map("metadata").text_map("labels")
        if labels:
            meta["labels"] = labels
        meta["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": _name(cronjob),
                "uid": cronjob.map("metadata").text("uid"),
                "controller": True,
            }
        ]
        spec = copy.deepcopy(template.map("spec").data) if template.has("spec") else None
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}

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
        so it runs where and as the nightly sync runs.

        The credentials are the Secret's files on a read-only volume (mode 0400; fsGroup makes them
        group-readable by the pod's non-root user, set here when the CronJob's pod has none), never
        environment variables, and no ServiceAccount token is mounted: the pod never calls the API."""
        pod = self._raw_cronjob().map("spec").map("jobTemplate").map("spec").map("template").map("spec")
        containers = pod.maps("containers") or [View(pod.what)]
        image = containers[0].text("image")
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
            "env": [{"name": "IMMICH_SYNC_SECRETS_DIR", "value": SECRETS_MOUNT}],
            "volumeMounts": [
                {"name": "target", "mountPath": RESTORE_MOUNT},
                {"name": "credentials", "mountPath": SECRETS_MOUNT, "readOnly": True},
            ],
        }
        for key in ("securityContext", "resources", "imagePullPolicy"):
            if containers[0].raw(key):
                container[key] = copy.deepcopy(containers[0].raw(key))
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [container],
            "volumes": [
                {"name": "target", "persistentVolumeClaim": {"claimName": pvc}},
                {"name": "credentials", "secret": {"secretName": secret, "defaultMode": 0o400}},
            ],
        }
        for key in ("securityContext", "nodeSelector", "tolerations", "imagePullSecrets", "serviceAccountName"):
            if pod.raw(key):
                spec[key] = copy.deepcopy(pod.raw(key))
        # Root owns the Secret's files; without an fsGroup a non-root user (the image's, or the CronJob's
        # runAsUser) could not read them. A CronJob applied before the keys moved to files may have none.
        security = spec.setdefault("securityContext", {})
        if "fsGroup" not in security:
            security["fsGroup"] = security.get("runAsGroup", IMAGE_GROUP)
            security.setdefault("fsGroupChangePolicy", "OnRootMismatch")
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
        """Suspend or resume, recording when it was suspended so `status` can say for how long (the API
        keeps no such time); resuming removes the record, so an old one never dates a later suspension."""
        access = Access("patch", "cronjobs", self.namespace, "batch", name=self.name)
        stamp = clock.iso(clock.now()) if suspended else None
        patched = self.kube.write(
            access,
            self.kube.batch.patch_namespaced_cron_job,
            self.name,
            self.namespace,
            {"metadata": {"annotations": {SUSPENDED_AT: stamp}}, "spec": {"suspend": suspended}},
            # the client would label a dict body as a JSON Patch, which the API server rejects
            _content_type="application/merge-patch+json",
        )
        return _cronjob_info(patched)

    def wait_for_pod(self, job: str, timeout: float = 300.0, poll: float = 1.0) -> dict[str, Any] | None:
        """The Job's pod once it exists and has left Pending (or `None` when the Job ended without one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pod = self._pods_of([job]).get(job)
            if pod is not None and pod.map("status").text("phase") not in ("", "Pending"):
                return dict(pod.data)
            info = self.job(job)
            if info.status in ("succeeded", "failed"):
                return dict(pod.data) if pod is not None else None
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
