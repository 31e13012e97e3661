"""Describe (k9s-style) on the sandbox: the service against the emulated API over HTTP, and the screen
under Pilot on a minimal app that pushes it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import DataTable, Static
from textual.worker import WorkerFailed

from immich_tui.demo.emulator import Denial
from immich_tui.demo.fixtures import CRONJOB, DB_CLUSTER, DB_NS, NS, World
from immich_tui.demo.world import Sandbox
from immich_tui.services.describe import Description, ObjectRef, describe
from immich_tui.services.errors import ServiceError
from immich_tui.services.status import Services, Target
from immich_tui.widgets.describe import DescribeScreen
from tests.tui import PinnedClock, start_sandbox

QUOTA = 'pods "immich-media-offsite-sync-manual-x7k2p" is forbidden: exceeded quota: compute, requested: cpu=2'


def event(name: str, kind: str, obj: str, reason: str, message: str, *, count: int = 1, api: str = "v1") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": NS if kind in ("Job", "Pod") else DB_NS},
        "involvedObject": {
            "kind": kind,
            "name": obj,
            "namespace": NS if kind in ("Job", "Pod") else DB_NS,
            "apiVersion": api,
        },
        "reason": reason,
        "message": message,
        "type": "Warning",
        "count": count,
        "firstTimestamp": "2026-11-26T02:30:05Z",
        "lastTimestamp": "2026-11-26T02:34:00Z",
        "source": {"component": "job-controller"},
    }


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """Yesterday's run failed and its pod is still there; a manual Job never got a pod (quota)."""
    with PinnedClock():
        sandbox = start_sandbox(tmp_path_factory.mktemp("describe"), World(failed_job_days=(1,)))
        server = sandbox.server
        jobs = [j for j in _items(sandbox, "batch/v1/jobs") if j["status"].get("failed")]
        failed = jobs[0]["metadata"]["name"]
        pod = next(p for p in _items(sandbox, "v1/pods") if p["metadata"]["labels"].get("job-name") == failed)
        server.patch(
            "batch/v1/jobs",
            NS,
            failed,
            {
                "metadata": {
                    "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": '{"secret-ish": 1}'},
                }
            },
        )
        server.put("v1/events", event("e1", "Job", failed, "BackoffLimitExceeded", "Job has reached the backoff limit"))
        server.put(
            "v1/events",
            event("e2", "Pod", pod["metadata"]["name"], "Failed", "Error: ErrImagePull pulling sync:0.1.0", count=4),
        )
        server.put("v1/events", event("e3", "Pod", "someone-else", "Failed", "not about this Job"))
        server.put(
            "batch/v1/jobs",
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "immich-media-offsite-sync-manual", "namespace": NS},
                "spec": {"template": {"spec": {"containers": [{"name": "sync", "image": "x"}]}}},
                "status": {},
            },
        )
        server.put("v1/events", event("e4", "Job", "immich-media-offsite-sync-manual", "FailedCreate", QUOTA, count=7))
        sandbox.failed_job = failed  # type: ignore[attr-defined]
        sandbox.failed_pod = pod["metadata"]["name"]  # type: ignore[attr-defined]
        try:
            yield sandbox
        finally:
            sandbox.stop()


def _items(box: Sandbox, key: str) -> list[dict[str, Any]]:
    return box.server.call(lambda: [o.raw for (k, _ns, _n), o in box.server.emulator.objects.items() if k == key])


def services(box: Sandbox) -> Services:
    return Services(Target(kubeconfig=str(box.kubeconfig), context="sandbox"), env=box.env)


def test_failed_job_shows_conditions_pod_events_and_clean_yaml(box: Sandbox) -> None:
    with PinnedClock():
        found = describe(services(box), ObjectRef("Job", box.failed_job, NS))  # type: ignore[attr-defined]
    assert [(c.type, c.status, c.reason) for c in found.conditions] == [("Failed", "True", "BackoffLimitExceeded")]
    reasons = {(e.involved, e.reason, e.count) for e in found.events}
    assert reasons == {
        (f"Job/{box.failed_job}", "BackoffLimitExceeded", 1),  # type: ignore[attr-defined]
        (f"Pod/{box.failed_pod}", "Failed", 4),  # type: ignore[attr-defined]
    }
    assert all("not about this Job" not in e.message for e in found.events)
    loaded = yaml.safe_load(found.yaml)
    assert loaded["kind"] == "Job" and loaded["metadata"]["name"] == box.failed_job  # type: ignore[attr-defined]
    assert "managedFields" not in loaded["metadata"]
    assert "last-applied-configuration" not in found.yaml and "secret-ish" not in found.yaml
    assert found.created == "2026-11-26T02:30:00Z"


def test_job_without_pod_is_explained_by_its_events(box: Sandbox) -> None:
    found = describe(services(box), ObjectRef("Job", "immich-media-offsite-sync-manual", NS))
    assert [(e.reason, e.count, e.message) for e in found.events] == [("FailedCreate", 7, QUOTA)]
    assert found.warnings == ["no pod exists for this Job: its Events say why (FailedCreate)"]


def test_cnpg_backup_and_cluster(box: Sandbox) -> None:
    svc = services(box)
    backup_name = next(b["metadata"]["name"] for b in _items(box, "postgresql.cnpg.io/v1/backups"))
    backup = describe(svc, ObjectRef("Backup", backup_name, DB_NS))
    assert yaml.safe_load(backup.yaml)["status"]["phase"] == "completed"
    assert backup.conditions == []
    cluster = describe(svc, ObjectRef("Cluster", DB_CLUSTER, DB_NS))
    assert [c.type for c in cluster.conditions] == ["Ready", "ContinuousArchiving", "LastBackupSucceeded"]
    assert yaml.safe_load(cluster.yaml)["spec"]["imageName"].startswith("ghcr.io/tensorchord/")


def test_cronjob_and_pod(box: Sandbox) -> None:
    svc = services(box)
    assert yaml.safe_load(describe(svc, ObjectRef("CronJob", CRONJOB, NS)).yaml)["spec"]["schedule"] == "30 2 * * *"
    pod = describe(svc, ObjectRef("Pod", box.failed_pod, NS))  # type: ignore[attr-defined]
    assert [e.reason for e in pod.events] == ["Failed"]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (ObjectRef("Job", "no-such-job", NS), "not found: jobs no-such-job in namespace immich"),
        (ObjectRef("Backup", "gone", DB_NS), "not found: backups gone in namespace postgresql"),
        (ObjectRef("Secret", "immich-offsite-restorer", NS), "describe never shows a Secret: its values are secret"),
        (
            ObjectRef("Deployment", "immich-server", NS),
            "cannot describe kind Deployment (can: Job, Pod, CronJob, Backup, Cluster)",
        ),
    ],
)
def test_missing_or_refused_is_one_line(box: Sandbox, ref: ObjectRef, expected: str) -> None:
    with pytest.raises(ServiceError) as caught:
        describe(services(box), ref)
    assert str(caught.value) == expected


def test_events_denied_is_a_warning_not_a_failure(box: Sandbox) -> None:
    denial = Denial("list", "events")
    box.server.call(lambda: box.server.emulator.denials.append(denial))
    try:
        found = describe(services(box), ObjectRef("Job", box.failed_job, NS))  # type: ignore[attr-defined]
    finally:
        box.server.call(lambda: box.server.emulator.denials.remove(denial))
    assert found.events == []
    assert [c.type for c in found.conditions] == ["Failed"]
    assert len(found.warnings) == 1 and found.warnings[0].startswith(
        "events: RBAC denies list events in namespace immich"
    )


# The screen -------------------------------------------------------------------------------------
class Host(App[None]):
    def __init__(self, screen: DescribeScreen) -> None:
        super().__init__()
        self.describe_screen = screen
        self.closed = False

    def on_mount(self) -> None:
        self.push_screen(self.describe_screen, callback=lambda _: setattr(self, "closed", True))


async def settle(pilot: Pilot[Any]) -> None:
    for _ in range(3):
        with contextlib.suppress(WorkerFailed):
            await pilot.app.workers.wait_for_complete()
        await pilot.pause()


def run(screen: DescribeScreen, scenario: Any) -> Host:
    host = Host(screen)

    async def main() -> None:
        async with host.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await scenario(pilot)

    with PinnedClock():
        asyncio.run(main())
    return host


def static(pilot: Pilot[Any], selector: str) -> str:
    return str(pilot.app.screen.query_one(selector, Static).render())


def cells(table: DataTable[Any]) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def test_screen_shows_header_conditions_events_and_yaml(box: Sandbox) -> None:
    screen = DescribeScreen(services(box), ObjectRef("Job", box.failed_job, NS))  # type: ignore[attr-defined]

    async def scenario(pilot: Pilot[Any]) -> None:
        assert isinstance(pilot.app.screen, DescribeScreen)
        header = static(pilot, "#describe-title")
        assert f"Job {box.failed_job}" in header and "namespace immich" in header  # type: ignore[attr-defined]
        assert header.endswith("· age 30h")
        assert static(pilot, "#describe-error") == ""
        conditions = cells(pilot.app.screen.query_one("#describe-conditions", DataTable))
        assert conditions == [
            ["Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", "30h"]
        ]
        events = cells(pilot.app.screen.query_one("#describe-events", DataTable))
        assert len(events) == 2
        assert [
            "Warning",
            "Failed",
            "30h",
            "4",
            f"Pod/{box.failed_pod}: Error: ErrImagePull pulling sync:0.1.0",
        ] in events  # type: ignore[attr-defined]
        assert "kind: Job" in static(pilot, "#describe-yaml")
        body = pilot.app.screen.query_one("#describe-body")
        assert body.max_scroll_y > 0  # more than 24 lines: it scrolls
        await pilot.press("end")
        await pilot.pause()
        assert body.scroll_y == body.max_scroll_y
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(pilot.app.screen, DescribeScreen)

    assert run(screen, scenario).closed


def test_screen_missing_object_is_one_line(box: Sandbox) -> None:
    screen = DescribeScreen(services(box), ObjectRef("Job", "no-such-job", NS))

    async def scenario(pilot: Pilot[Any]) -> None:
        assert static(pilot, "#describe-error") == "not found: jobs no-such-job in namespace immich"
        assert pilot.app.screen.query_one("#describe-events", DataTable).row_count == 0
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(pilot.app.screen, DescribeScreen)

    run(screen, scenario)


def test_screen_unreachable_cluster_is_one_line(tmp_path: Path, box: Sandbox) -> None:
    config = yaml.safe_load(box.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "http://127.0.0.1:9"  # discard port: nothing listens
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    screen = DescribeScreen(Services(Target(kubeconfig=str(path)), env=box.env), ObjectRef("Job", "x", NS))

    async def scenario(pilot: Pilot[Any]) -> None:
        line = static(pilot, "#describe-error")
        assert line.startswith("cannot reach the cluster at http://127.0.0.1:9") and "\n" not in line

    run(screen, scenario)


def test_description_type_is_the_interface() -> None:
    ref = ObjectRef("Job", "a", NS)
    assert Description(ref, "kind: Job\n").warnings == []


def test_credential_like_env_values_are_masked(box: Sandbox) -> None:
    box.server.put(
        "v1/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "with-env", "namespace": NS},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "x",
                        "env": [
                            {"name": "DB_PASSWORD", "value": "hunter2-never-shown"},
                            {"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalr-never-shown"},
                            {"name": "TZ", "value": "Europe/Berlin"},
                        ],
                    }
                ]
            },
        },
    )
    found = describe(services(box), ObjectRef("Pod", "with-env", NS))
    env = yaml.safe_load(found.yaml)["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "DB_PASSWORD", "value": "<masked>"},
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "<masked>"},
        {"name": "TZ", "value": "Europe/Berlin"},
    ]
    assert "never-shown" not in found.yaml


def test_malformed_conditions_are_a_warning(box: Sandbox) -> None:
    box.server.put(
        "postgresql.cnpg.io/v1/clusters",
        {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "odd-db", "namespace": DB_NS},
            "status": {"conditions": ["Ready", {"type": "ContinuousArchiving", "status": "False", "message": "a\nb"}]},
        },
    )
    found = describe(services(box), ObjectRef("Cluster", "odd-db", DB_NS))
    assert [(c.type, c.status, c.message) for c in found.conditions] == [("ContinuousArchiving", "False", "a b")]
    assert found.warnings == ["status.conditions[0] is not a condition: skipped"]
