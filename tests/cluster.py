"""A seeded emulated cluster for plugin tests: kmock's emulator on 127.0.0.1, the official client over HTTP.

`make_cluster(World(...))` starts one, with a Job controller that runs the real sync engine into the
session's moto server and a Backup controller that completes CNPG Backups.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from immich_tui.demo.controllers import BackupController, JobController, SyncTarget
from immich_tui.demo.emulator import EmulatorServer
from immich_tui.demo.fixtures import World, seed
from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from immich_tui.plugin.cli import main
from tests.conftest import Result

READER_SECRET_VALUE = "reader-secret-never-printed-4f1c"
WRITER_SECRET_VALUE = "writer-secret-never-read-9a2b"


@dataclass
class Cluster:
    server: EmulatorServer
    kubeconfig: Path
    env: dict[str, str]
    jobs: JobController
    secrets: tuple[str, ...] = (READER_SECRET_VALUE, WRITER_SECRET_VALUE)
    outputs: list[str] = field(default_factory=list)

    @property
    def emulator(self) -> Any:
        return self.server.emulator

    def run(self, *argv: str, env: dict[str, str] | None = None, kubeconfig: bool = True) -> Result:
        stdout, stderr = io.StringIO(), io.StringIO()
        args = [*argv, "--kubeconfig", str(self.kubeconfig)] if kubeconfig else list(argv)
        code = main(args, stdout=stdout, stderr=stderr, env=self.env if env is None else env)
        out, err = stdout.getvalue(), stderr.getvalue()
        for secret in self.secrets:
            assert secret not in out and secret not in err, "a secret value was printed"
        return Result(code, out, err)

    def requests(self, method: str | None = None, path: str = "") -> list[Any]:
        return [
            r
            for r in self.emulator.requests
            if (method is None or r.method.value == method) and path in str(r.url.path)
        ]

    def get(self, key: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.server.get(key, namespace, name)


# The `make_cluster` fixture: `make_cluster(World(...), restorer=True, sync_bucket=None)` -> a started Cluster.
MakeCluster = Callable[..., Cluster]


@pytest.fixture
def make_cluster(
    tmp_path: Path, s3: LocalS3, bucket: str, sample: SampleLibrary, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MakeCluster]:
    for name in list(os.environ):
        if name.startswith(("AWS_", "IMMICH_SYNC_", "KUBECONFIG")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    started: list[EmulatorServer] = []
    controllers: list[JobController | BackupController] = []

    def make(world: World | None = None, *, restorer: bool = True, sync_bucket: str | None = None) -> Cluster:
        world = world or World()
        world.library = sample.root
        if restorer:
            world.restorer = {
                "AWS_ACCESS_KEY_ID": "AKIAREADER",
                "AWS_SECRET_ACCESS_KEY": READER_SECRET_VALUE,
                "AWS_REGION": "us-east-1",
                "BUCKET_NAME": bucket,
                "MEDIA_PREFIX": "immich/media/",
                "AWS_ENDPOINT_URL_S3": s3.endpoint,
            }
        server = EmulatorServer().start()
        started.append(server)
        seed(server, world)
        import base64

        server.put(
            "v1/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "immich-offsite-writer", "namespace": "immich"},
                "data": {"AWS_SECRET_ACCESS_KEY": base64.b64encode(WRITER_SECRET_VALUE.encode()).decode()},
            },
        )
        target = SyncTarget(s3.endpoint, sync_bucket or bucket, "immich/media/", sample.root, "AKIAW", "writer")
        target.restore_root = tmp_path / f"restored-{len(started)}"
        jobs = JobController(server, target)
        controllers.append(jobs)
        controllers.append(BackupController(server))
        kubeconfig = tmp_path / f"kubeconfig-{len(started)}"
        kubeconfig.write_text(yaml.safe_dump(server.kubeconfig()))
        return Cluster(server, kubeconfig, {"PATH": os.environ.get("PATH", "")}, jobs)

    yield make
    for controller in controllers:
        controller.join()  # a Job still running when the test ended finishes before its cluster goes away
    for server in started:
        server.stop()
