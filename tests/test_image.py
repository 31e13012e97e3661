"""The sync image (deploy/image/): its Dockerfile, build context and lock, and the runtime it produces.

No container runtime is needed: the image's /app is rebuilt in a temporary directory the way the Dockerfile
builds it (the hash-checked lock installed with --target, then `sync_engine/` alone), and the image's
ENTRYPOINT and CMD run from it in a fresh interpreter that sees no other site-packages, no project
checkout and no inherited environment. The image carries only what the CronJob runs: the live progress
display's library (rich) is not in it, and runs on a pipe and on a pseudo-terminal fall back to the line log.
"""

from __future__ import annotations

import ast
import json
import os
import pty
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from sync_engine import __version__
from tests.conftest import list_keys

ROOT = Path(__file__).resolve().parent.parent
IMAGE_DIR = ROOT / "deploy" / "image"
DOCKERFILE = IMAGE_DIR / "Dockerfile"
LOCK = IMAGE_DIR / "requirements.txt"
DOCKERIGNORE = ROOT / ".dockerignore"

# What the project installs for the TUI, the kubectl plugin and the tests; none of it belongs in the image.
NOT_IN_IMAGE = ("immich_tui", "kubernetes", "textual", "kmock", "croniter", "yaml", "boto3", "s3transfer", "moto")
# The live progress display's library and its dependencies: for terminals, never for the CronJob.
DISPLAY_ONLY = {"rich": "rich", "pygments": "pygments", "markdown_it": "markdown-it-py", "mdurl": "mdurl"}
PREFIX = "immich/media/"
DEFAULT_FOLDERS = ("upload/", "library/", "profile/")
ISOLATION = ("-S", "-s")  # no site-packages at all: only the image's PYTHONPATH and the standard library


# Dockerfile ----------------------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {args!r}: use the KEY=value form"
                out[key] = value
        return out


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), value)


def stages(dockerfile: Path = DOCKERFILE) -> list[Stage]:
    global_args: dict[str, str] = {}
    out: list[Stage] = []
    for keyword, args in instructions(dockerfile.read_text("utf-8")):
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            out.append(Stage(substitute(words[0], global_args), name))
        elif not out:
            assert keyword == "ARG", f"only ARG may precede the first FROM, not {keyword}"
            key, _, default = args.partition("=")
            global_args[key] = default.strip('"')
        else:
            out[-1].instructions.append((keyword, args))
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not the JSON (exec) form: {args}"
    return value


def context_sources(stage: Stage) -> list[str]:
    """What the stage copies from the build context (COPY without --from)."""
    out: list[str] = []
    for args in stage.all("COPY") + stage.all("ADD"):
        words = args.split()
        if any(w.startswith("--from") for w in words):
            continue
        out += [w for w in words if not w.startswith("--")][:-1]
    return out


def test_dockerfile_is_multi_stage_with_a_shell_less_non_root_runtime():
    all_stages = stages()
    assert len(all_stages) >= 2, "the build tools stay in a builder stage"
    builder, final = all_stages[0], all_stages[-1]

    for stage in all_stages:
        repo, _, tag = stage.base.split("@")[0].rpartition(":")
        assert repo and "/" not in tag, f"{stage.base}: pin base images by tag (or digest)"
        assert tag != "latest", f"{stage.base}: no :latest"
    # distroless python3-debian12 is Debian 12's Python 3.11; the builder is the same Python on the same Debian
    assert final.base.startswith("gcr.io/distroless/python3-debian12:"), final.base
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", builder.base), builder.base
    assert builder.name and all(f"--from={builder.name}" in a for a in final.all("COPY")), "runtime copies the build"

    # no shell in the runtime: nothing may RUN there, and the entrypoint is the exec form
    assert final.all("RUN") == [] and final.all("SHELL") == []
    user = final.last("USER")
    assert user in ("65532:65532", "nonroot", "nonroot:nonroot"), user
    entrypoint, cmd = exec_form(final.last("ENTRYPOINT")), exec_form(final.last("CMD"))
    assert entrypoint[0] in ("/usr/bin/python3", "/usr/bin/python3.11", "python3")
    assert entrypoint[1:] == ["-m", "sync_engine"]
    assert cmd == ["backup", "--log-format", "json"], "the CronJob's command, as deploy/README.md fixes it"

    env = final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"].split(":") == ["/app/site", "/app"]

    labels = final.last("LABEL")
    for key in ("title", "description", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert f"ARG VERSION={pyproject['project']['version']}" in [f"ARG {a}" for a in final.all("ARG")]
    assert pyproject["project"]["version"] == __version__


def test_builder_installs_only_the_lock_and_the_engine():
    builder = stages()[0]
    assert sorted(context_sources(builder)) == ["deploy/image/requirements.txt", "sync_engine/"]
    install = next(a for a in builder.all("RUN") if "pip install" in a)
    for flag in ("--require-hashes", "--no-deps", "--only-binary=:all:", "--target /app/site"):
        assert flag in install, flag
    assert any("compileall" in a for a in builder.all("RUN")), "byte-code is compiled at build time"


def test_dockerignore_sends_only_what_the_image_copies():
    patterns = [p.strip() for p in DOCKERIGNORE.read_text("utf-8").splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert patterns[0] == "*", "deny everything, then allow what the build copies"
    allowed = sorted(p[1:] for p in patterns if p.startswith("!"))
    assert allowed == sorted(context_sources(stages()[0]))
    assert "**/__pycache__" in patterns


# Lock ----------------------------------------------------------------------------------------------------


def locked(lock: Path = LOCK) -> dict[str, tuple[str, list[str]]]:
    """canonical name -> (version, hashes), from the requirement entries of the lock."""
    text = re.sub(r"\\\n", " ", lock.read_text("utf-8"))
    out: dict[str, tuple[str, list[str]]] = {}
    for raw in text.splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            assert line == "--only-binary :all:", f"unexpected option in the lock: {line}"
            continue
        spec, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", spec)
        assert match, f"not pinned with ==: {spec}"
        hashes = [o.removeprefix("--hash=") for o in options]
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), f"unhashed: {line}"
        out[canonicalize_name(match.group(1))] = (match.group(2), hashes)
    return out


def test_lock_pins_and_hashes_every_requirement_and_fits_the_project():
    lock = locked()
    assert {"botocore", "urllib3", "humanize"} <= set(lock)
    assert not {canonicalize_name(n) for n in (*NOT_IN_IMAGE, "pyyaml")} & set(lock)
    assert not {canonicalize_name(n) for n in (*DISPLAY_ONLY.values(), "textual")} & set(lock)
    assert set(lock) == {"botocore", "jmespath", "python-dateutil", "six", "urllib3", "humanize"}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    for dependency in map(Requirement, pyproject["project"]["dependencies"]):
        name = canonicalize_name(dependency.name)
        if name in lock:
            assert dependency.specifier.contains(lock[name][0], prereleases=True), f"{name}: {dependency}"


# The image's runtime, rebuilt --------------------------------------------------------------------------


@dataclass
class Runtime:
    root: Path  # stands for the image's /
    env: dict[str, str]  # the image's ENV, paths under root
    entrypoint: list[str]
    cmd: list[str]

    @property
    def site(self) -> Path:
        return self.root / "app" / "site"

    def run(
        self, *argv: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        workdir = self.root / "work"
        workdir.mkdir(exist_ok=True)
        return subprocess.run(
            [sys.executable, *ISOLATION, *argv],
            cwd=workdir,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def install_lock(lock: Path, site: Path) -> None:
    """The builder's RUN: the hash-checked lock, wheels only, into a plain directory (pip's wheel cache keeps
    reruns offline)."""
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--require-hashes",
         "--no-deps", "--only-binary=:all:", "--no-compile", "--target", str(site), "-r", str(lock)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    final = stages()[-1]
    root = tmp_path_factory.mktemp("image")
    install_lock(LOCK, root / "app" / "site")
    shutil.copytree(ROOT / "sync_engine", root / "app" / "sync_engine", ignore=shutil.ignore_patterns("__pycache__"))
    env = final.env()
    env["PYTHONPATH"] = ":".join(str(root) + entry for entry in env["PYTHONPATH"].split(":"))
    env |= {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(root / "nonexistent-home")}
    return Runtime(root, env, exec_form(final.last("ENTRYPOINT")), exec_form(final.last("CMD")))


def _guarded(tree: ast.AST) -> set[ast.AST]:
    """Import statements inside a `try` whose handlers catch ImportError: optional at runtime."""
    guarded: set[ast.AST] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
        if caught & {"ImportError", "ModuleNotFoundError"}:
            guarded.update(
                n for stmt in node.body for n in ast.walk(stmt) if isinstance(n, ast.Import | ast.ImportFrom)
            )
    return guarded


def engine_imports(*, optional: bool = False) -> list[str]:
    """Every third-party module the engine's sources import, lazily imported ones included; with `optional`,
    only those whose absence the engine handles (imported in a `try` that catches ImportError)."""
    found: set[str] = set()
    for source in (ROOT / "sync_engine").glob("*.py"):
        tree = ast.parse(source.read_text("utf-8"))
        guarded = _guarded(tree)
        for node in ast.walk(tree):
            if (node in guarded) != optional:
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    stdlib = set(sys.stdlib_module_names) | {"sync_engine", "__future__"}
    third_party = sorted(name for name in found if name.split(".")[0] not in stdlib)
    assert third_party, "no third-party import found"
    return third_party


PROBE = """
import importlib, importlib.util, json, pkgutil, sys
import sync_engine
from botocore.httpsession import get_cert_path
wanted = json.loads(sys.argv[1])
for name in wanted["imports"]:
    importlib.import_module(name)
for info in pkgutil.iter_modules(sync_engine.__path__, "sync_engine."):
    if info.name != "sync_engine.__main__":
        importlib.import_module(info.name)
files = [m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)]
print(json.dumps({
    "path": sys.path,
    "files": files,
    "absent": [n for n in wanted["absent"] if importlib.util.find_spec(n) is None],
    "ca_bundle": get_cert_path(True),
}))
"""


def test_lock_is_complete_and_nothing_else_is_installed(runtime: Runtime):
    lock = locked()
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions(path=[str(runtime.site)])}
    assert {name: d.version for name, d in installed.items()} == {name: v for name, (v, _) in lock.items()}
    for dist in installed.values():  # closed under dependencies (no extras, this interpreter's markers)
        for requirement in map(Requirement, dist.requires or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                assert canonicalize_name(requirement.name) in lock, f"{dist.metadata['Name']} needs {requirement}"
    assert sorted(p.name for p in (runtime.root / "app").iterdir()) == ["site", "sync_engine"]
    for name in NOT_IN_IMAGE:
        assert not (runtime.site / name).exists() and not list(runtime.site.glob(f"{name}-*.dist-info")), name

    absent = [*NOT_IN_IMAGE, *DISPLAY_ONLY]
    probe = runtime.run("-c", PROBE, json.dumps({"imports": engine_imports(), "absent": absent}))
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    assert seen["absent"] == absent, "importable in the image's runtime, but must not be"
    outside = [f for f in seen["files"] if not f.startswith((str(runtime.root), sys.base_prefix))]
    assert outside == [], "loaded from outside the image's /app and the standard library"
    checkout = [p for p in seen["path"] if p.startswith(str(ROOT)) and not p.startswith(str(runtime.root))]
    assert checkout == [] and not [p for p in seen["path"] if "site-packages" in p], seen["path"]
    assert seen["ca_bundle"].startswith(str(runtime.site)) and Path(seen["ca_bundle"]).is_file()


def test_entrypoint_runs_from_the_image_layout(runtime: Runtime):
    for argv in ([], ["backup"]):
        result = runtime.run(*runtime.entrypoint[1:], *argv, "--help")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: immich-sync"), result.stdout
    version = runtime.run(*runtime.entrypoint[1:], "--version")
    assert version.returncode == 0 and __version__ in version.stdout + version.stderr


def test_default_command_backs_up_from_the_image_layout(
    runtime: Runtime, sync_env: dict[str, str], s3: LocalS3, bucket: str, sample: SampleLibrary
):
    """ENTRYPOINT + CMD against a local S3: JSON log lines, every object uploaded, nothing written to /app.

    HOME does not exist; the manifest spool (a nameless temporary file) needs a writable TMPDIR, which the
    CronJob provides as an emptyDir under a read-only root filesystem.
    """
    tmpdir = runtime.root / "tmp"
    tmpdir.mkdir(exist_ok=True)
    before = sorted(p.relative_to(runtime.root) for p in (runtime.root / "app").rglob("*"))
    result = runtime.run(*runtime.entrypoint[1:], *runtime.cmd, env={**sync_env, "TMPDIR": str(tmpdir)})
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert lines and all({"time", "level", "event", "msg"} <= set(line) for line in lines)
    want = {PREFIX + rel: size for rel, size in sample.files.items() if rel.startswith(DEFAULT_FOLDERS)}
    assert {k: o["Size"] for k, o in list_keys(s3, bucket, PREFIX).items()} == want
    assert sorted(p.relative_to(runtime.root) for p in (runtime.root / "app").rglob("*")) == before
    assert list(tmpdir.iterdir()) == []


# Without the display library -----------------------------------------------------------------------------


def test_the_display_library_is_neither_installed_nor_importable(runtime: Runtime):
    """rich (and what it pulls in) is for terminals; the engine imports it only where it can do without it."""
    assert {m.split(".")[0] for m in engine_imports(optional=True)} == {"rich"}
    assert not {m.split(".")[0] for m in engine_imports()} & {"rich", "textual", *DISPLAY_ONLY}
    installed = {canonicalize_name(d.metadata["Name"]) for d in metadata.distributions(path=[str(runtime.site)])}
    assert not installed & {canonicalize_name(n) for n in (*DISPLAY_ONLY.values(), "textual")}, installed
    for module in (*DISPLAY_ONLY, "textual"):
        assert not (runtime.site / module).exists() and not list(runtime.site.glob(f"{module}-*")), module
        found = runtime.run("-c", f"import importlib.util as u; print(u.find_spec({module!r}) is None)")
        assert found.stdout.strip() == "True", (module, found.stdout, found.stderr)


def run_on_terminal(runtime: Runtime, *argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Like Runtime.run, with stderr on a pseudo-terminal (as `docker run -it` gives it): code, stdout, stderr."""
    workdir = runtime.root / "work"
    workdir.mkdir(exist_ok=True)
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # a full terminal buffer would block the run
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(
            [sys.executable, *ISOLATION, *argv],
            cwd=workdir,
            env={**runtime.env, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        out, _ = proc.communicate(timeout=120)
        reader.join(timeout=10)
    finally:
        os.close(master)
    return proc.returncode, out.decode("utf-8"), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "pseudo-terminal"])
def test_backup_and_restore_show_the_line_log_without_the_display_library(
    runtime: Runtime,
    sync_env: dict[str, str],
    s3: LocalS3,
    bucket: str,
    sample: SampleLibrary,
    tmp_path: Path,
    terminal: bool,
):
    """On a terminal the engine would show a live display; the image has no display library, so backup and
    restore log lines instead, and finish exactly as they do on a pipe."""
    tmpdir = runtime.root / "tmp"
    tmpdir.mkdir(exist_ok=True)
    env = {**sync_env, "TMPDIR": str(tmpdir)}
    entry = runtime.entrypoint[1:]

    def run(*argv: str) -> tuple[int, str, str]:
        if terminal:
            return run_on_terminal(runtime, *entry, *argv, env=env)
        done = runtime.run(*entry, *argv, env=env)
        return done.returncode, done.stdout, done.stderr

    if terminal:  # the child really sees a terminal, so the display path is the one taken
        assert run_on_terminal(runtime, "-c", "import sys; print(sys.stderr.isatty())", env=env)[1].strip() == "True"
    code, out, err = run("backup")
    assert code == 0, err
    assert "Traceback" not in err and "ModuleNotFoundError" not in err
    want = {PREFIX + rel: size for rel, size in sample.files.items() if rel.startswith(DEFAULT_FOLDERS)}
    assert {k: o["Size"] for k, o in list_keys(s3, bucket, PREFIX).items()} == want
    uploaded = [line for line in err.splitlines() if " INFO  uploaded " in line]
    assert len(uploaded) == len(want), err[-2000:]
    assert out.startswith("backup ok")

    target = tmp_path / "restored"
    code, out, err = run("restore", "--to", str(target), "--only", "upload,library,profile")
    assert code == 0, err
    assert "Traceback" not in err and len([line for line in err.splitlines() if " restored " in line]) == len(want)
    assert out.startswith("restore ok")
    restored = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    assert {PREFIX + rel for rel in restored if rel.startswith(DEFAULT_FOLDERS)} == set(want)
