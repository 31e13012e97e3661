"""The Immich library on its PVC: counted live inside the Immich server pod, or taken from the last run report.

The live count runs a POSIX `sh`/`find`/`stat`/`awk` script through `exec` (GNU and busybox images
alike) and returns one summary line per second-level folder, so the data sent back stays small
however large the library is. When exec is not allowed or no server pod runs, the last sync
report's per-folder counts are used, and the result says so and how old it is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from immich_tui.services import clock
from immich_tui.services.kube import Access, ClusterError, Kube
from immich_tui.services.offsite import RunSummary
from immich_tui.services.schema import View
from sync_engine.config import DEFAULT_FOLDERS, IMMICH_FOLDERS

SERVER_SELECTOR = "app.kubernetes.io/name=server"
MOUNT = "/usr/src/app/upload"

# $1 = library root, $2 = epoch seconds; files modified at or after $2 are counted as pending.
INVENTORY_NAME = "immich-inventory"  # $0 of the script, shown by `ps` in the pod
INVENTORY_SCRIPT = r"""
cd "$1" || exit 3
for d in upload library profile thumbs encoded-video backups; do
  [ -d "$d" ] || continue
  m=0; [ -f "$d/.immich" ] && m=1
  printf 'D %s %s\n' "$d" "$m"
  find "$d" -type f -exec stat -c '%s %Y %n' {} +
done | awk -v since="$2" '
$1 == "D" { print "F\t" $2 "\t" $3; next }
{
  size = $1; mt = $2; sub(/^[^ ]+ [^ ]+ /, ""); n = split($0, p, "/")
  k = (n > 2) ? p[1] "/" p[2] : p[1]
  c[k]++; b[k] += size; if (mt > w[k]) w[k] = mt
  if (mt >= since) { pc[k]++; pb[k] += size }
}
END { for (k in c) printf "S\t%s\t%d\t%.0f\t%d\t%d\t%.0f\n", k, c[k], b[k], w[k], pc[k], pb[k] }'
"""


@dataclass
class FolderCount:
    name: str  # `library` or, for drill-down, `library/admin`
    files: int = 0
    bytes: int = 0
    newest: dt.datetime | None = None
    pending: int = 0  # modified since the last successful sync started (live), or not stored by it (report)
    pending_bytes: int = 0


@dataclass
class FolderInfo(FolderCount):
    backed_up: bool = False
    exists: bool = True
    marker: bool = True
    children: list[FolderCount] = field(default_factory=list)


@dataclass
class LibraryInventory:
    source: str  # "live" | "report" | "none"
    detail: str  # pod name, report key, or why neither
    taken_at: dt.datetime | None
    folders: list[FolderInfo]
    fallback_reason: str = ""

    @property
    def total_files(self) -> int:
        return sum(f.files for f in self.folders)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.folders)


def parse_listing(text: str, selected: tuple[str, ...]) -> list[FolderInfo]:
    folders: dict[str, FolderInfo] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "F" and len(parts) == 3:
            folders[parts[1]] = FolderInfo(parts[1], backed_up=parts[1] in selected, marker=parts[2] == "1")
        elif parts[0] == "S" and len(parts) == 7 and all(p.isascii() and p.isdigit() for p in parts[2:]):
            # a line of another form (an odd awk, a hostile image) is skipped, not a traceback
            name, files, size, newest, pending, pending_bytes = parts[1:]
            top = name.split("/", 1)[0]
            folder = folders.setdefault(top, FolderInfo(top, backed_up=top in selected))
            when = _when(int(newest))
            child = FolderCount(name, int(files), int(size), when, int(pending), int(pending_bytes))
            folder.children.append(child)
            folder.files += child.files
            folder.bytes += child.bytes
            folder.pending += child.pending
            folder.pending_bytes += child.pending_bytes
            if when and (folder.newest is None or when > folder.newest):
                folder.newest = when
    rows = []
    for name in IMMICH_FOLDERS:
        row = folders.pop(name, None) or FolderInfo(name, backed_up=name in selected, exists=False, marker=False)
        row.children.sort(key=lambda c: c.name)
        rows.append(row)
    return rows


def _when(epoch: int) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(epoch, dt.UTC) if epoch else None
    except (OverflowError, OSError, ValueError):  # past year 9999: not a time a file has
        return None


def from_report(run: RunSummary, reason: str) -> LibraryInventory:
    rows = []
    for name in IMMICH_FOLDERS:
        stats = run.per_folder.get(name)
        if stats is None:
            rows.append(FolderInfo(name, backed_up=False, exists=True, marker=True))
            continue
        pending = stats["deferred"] + stats["failed"] + stats["unstable"]
        rows.append(FolderInfo(name, stats["files"], stats["bytes"], None, pending, 0, backed_up=True))
    return LibraryInventory("report", run.key, run.finished, rows, reason)


class Library:
    def __init__(self, kube: Kube, namespace: str = "immich", selected: tuple[str, ...] = DEFAULT_FOLDERS) -> None:
        self.kube = kube
        self.namespace = namespace
        self.selected = selected

    def server_pod(self) -> str | None:
        pods = self.kube.list(
            Access("list", "pods", self.namespace),
            self.kube.core.list_namespaced_pod,
            self.namespace,
            label_selector=SERVER_SELECTOR,
            field_selector="status.phase=Running",
            max_items=10,
        )
        for pod in pods:
            return View.of("Pod", pod, namespace=self.namespace).map("metadata").text("name")
        return None

    def exec_allowed(self, pod: str) -> bool:
        ok, _ = self.kube.allowed(Access("create", "pods", self.namespace, subresource="exec", name=pod))
        return ok

    def live(self, pod: str, since: dt.datetime | None) -> LibraryInventory:
        from kubernetes.stream import stream

        command = ["sh", "-c", INVENTORY_SCRIPT, INVENTORY_NAME, MOUNT, str(int(since.timestamp()) if since else 0)]
        access = Access("create", "pods", self.namespace, subresource="exec", name=pod)
        taken = clock.now()
        try:
            ws: Any = stream(
                self.kube.core.connect_get_namespaced_pod_exec,
                pod,
                self.namespace,
                command=command,
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
                _preload_content=False,
            )
            ws.run_forever(timeout=600)
            out, err, code = ws.read_stdout(), ws.read_stderr(), ws.returncode
            ws.close()
        except Exception as exc:  # the websocket client raises its own types, 403 included
            status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
            if status == 403:
                raise ClusterError(f"RBAC denies {access}") from None
            raise ClusterError(f"exec into {self.namespace}/{pod} failed: {exc}") from None
        if code:
            first = (err or "").strip().splitlines()[:1]
            raise ClusterError(f"inventory script in {pod} exited {code}: {first[0] if first else 'no output'}")
        return LibraryInventory("live", f"pod {pod}", taken, parse_listing(out or "", self.selected))

    def inventory(self, last_ok: RunSummary | None, *, live: bool = True) -> LibraryInventory:
        """Live when possible; otherwise the last successful run's counts, with the reason."""
        reason = "live count not requested"
        if live:
            try:
                pod = self.server_pod()
                if pod is None:
                    reason = f"no running Immich server pod ({SERVER_SELECTOR}) in {self.namespace}"
                elif not self.exec_allowed(pod):
                    reason = f"exec into {self.namespace}/{pod} is not allowed (RBAC: create pods/exec)"
                else:
                    return self.live(pod, last_ok.started if last_ok else None)
            except ClusterError as exc:
                reason = str(exc)
        if last_ok is None:
            return LibraryInventory("none", reason, None, [], reason)
        return from_report(last_ok, reason)
