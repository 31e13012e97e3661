"""A throwaway Ceph RADOS Gateway on 127.0.0.1: the S3 store of Rook-Ceph, real and small.

One monitor, one OSD keeping objects in memory (memstore), no manager, authentication off between the
daemons, and radosgw's beast frontend. What makes it start in seconds rather than minutes: `ms mon
client mode = crc` (otherwise radosgw waits 300 s for a monitor config it cannot fetch), `paxos propose
interval = 0.05` and `tcp_nodelay=1` on the frontend (otherwise every small GET waits ~44 ms).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

DAEMONS = ("ceph-mon", "ceph-osd", "radosgw", "monmaptool", "ceph-authtool", "ceph", "radosgw-admin")
PACKAGES = "radosgw ceph-mon ceph-osd"
ACCESS_KEY = "CONFORMANCEKEY000001"
SECRET_KEY = "conformance-secret-not-a-real-one-000000"


def missing() -> list[str]:
    return [name for name in DAEMONS if shutil.which(name) is None]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RadosGateway:
    """Start with `with RadosGateway(tmp) as rgw:`; `rgw.endpoint` speaks S3 (path-style)."""

    def __init__(self, root: Path, memstore_bytes: int = 2147483648) -> None:
        self.root = root
        self.memstore_bytes = memstore_bytes
        self.conf = root / "ceph.conf"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.endpoint = ""

    def _write_conf(self, mon: int, rgw: int, fsid: str) -> None:
        r = self.root
        self.conf.write_text(
            f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
paxos propose interval = 0.05
osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd crush chooseleaf type = 0
run dir = {r}/run
log file = {r}/log/$name.log
admin socket = {r}/run/$name.asok
keyring = {r}/keyring
[mon.a]
mon data = {r}/mon
mon addr = v2:127.0.0.1:{mon}
[osd.0]
osd data = {r}/osd0
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw} tcp_nodelay=1
rgw data = {r}/rgw
"""
        )

    def _run(self, *argv: str) -> str:
        done = subprocess.run([*argv, "-c", str(self.conf)], capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()[-500:]}")
        return done.stdout

    def _daemon(self, name: str, *argv: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append(subprocess.Popen([*argv, "-f", "-c", str(self.conf)], stdout=log, stderr=log))

    def __enter__(self) -> RadosGateway:
        for sub in ("mon", "osd0", "run", "log", "rgw"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        mon, rgw, fsid = _port(), _port(), str(uuid.uuid4())
        self._write_conf(mon, rgw, fsid)
        subprocess.run(
            ["ceph-authtool", "--create-keyring", str(self.root / "keyring"), "--gen-key", "-n", "mon."],
            check=True,
            capture_output=True,
        )
        monmap = str(self.root / "monmap")
        subprocess.run(
            ["monmaptool", "--create", "--addv", "a", f"[v2:127.0.0.1:{mon}]", "--fsid", fsid, monmap],
            check=True,
            capture_output=True,
        )
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap)
        self._daemon("mon", "ceph-mon", "-i", "a")
        osd_id = self._run("ceph", "--connect-timeout", "20", "osd", "create").strip()
        self._run("ceph-osd", "-i", osd_id, "--mkfs")
        self._daemon("osd", "ceph-osd", "-i", osd_id)
        self._daemon("rgw", "radosgw", "-n", "client.rgw")
        self.endpoint = f"http://127.0.0.1:{rgw}"
        self._wait_http()
        self._run(
            "radosgw-admin",
            "user",
            "create",
            "--uid=conformance",
            "--display-name=conformance",
            f"--access-key={ACCESS_KEY}",
            f"--secret={SECRET_KEY}",
        )
        return self

    def add_user(self, uid: str) -> tuple[str, str]:
        """Another S3 identity owning nothing (radosgw-admin generates its keys): access key, secret.

        A user that is not the bucket's owner has no right to it until a bucket policy names its ARN,
        `arn:aws:iam:::user/<uid>` (no tenant), which is how the drills give each identity its own rights.
        """
        made = json.loads(self._run("radosgw-admin", "user", "create", f"--uid={uid}", f"--display-name={uid}"))
        [key] = made["keys"]
        return str(key["access_key"]), str(key["secret_key"])

    def _wait_http(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"radosgw did not answer on {self.endpoint} within {seconds:.0f} s")

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
