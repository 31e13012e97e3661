"""The tools image (deploy/image/tools.Dockerfile): its Dockerfile, build context and lock, and the runtime it
produces for the restore drill CronJob (deploy/overlays/drill).

No container runtime is needed: the image's /app is rebuilt in a temporary directory the way the Dockerfile
builds it (the hash-checked lock installed with --target, then the sources it copies), and the ENTRYPOINT runs
from it in a fresh interpreter that sees no other site-packages, no project checkout and no inherited
environment. The image carries the kubectl plugin's commands and the engine they call: not the Textual app,
the sandbox or the display library, which the plugin imports only for its `tui` command.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_image import (
    DOCKERIGNORE,
    IMAGE_DIR,
    ROOT,
    Runtime,
    Stage,
    _guarded,
    context_sources,
    exec_form,
    install_lock,
    locked,
    stages,
)

DOCKERFILE = IMAGE_DIR / "tools.Dockerfile"
LOCK = IMAGE_DIR / "tools-requirements.txt"
TOOLS_DOCKERIGNORE = IMAGE_DIR / "tools.Dockerfile.dockerignore"  # BuildKit's per-Dockerfile ignore file
CRONJOB = ROOT / "deploy" / "overlays" / "drill" / "cronjob.yaml"
PROG = "kubectl immich-backup"
ENTRY = "immich_tui.plugin.cli"
# The `tui` command's module: it opens the Textual app, for a workstation's terminal, never in the image.
TUI_ONLY = "immich_tui.cli"
# The sources the image copies: the engine, and the plugin's part of immich_tui.
COPIED = [
    "deploy/image/tools-requirements.txt",
    "sync_engine/",
    "immich_tui/__init__.py",
    "immich_tui/flags.py",
    "immich_tui/plugin/",
    "immich_tui/services/",
]
# Installed for the TUI, the sandbox and the tests; none of it belongs in the image.
NOT_IN_IMAGE = ("textual", "rich", "pygments", "markdown_it", "mdurl", "kmock", "moto", "boto3", "s3transfer")
NOT_IN_IMAGE_DISTS = {canonicalize_name(n) for n in ("markdown-it-py", "kubernetes-validate", *NOT_IN_IMAGE)}
NOT_COPIED = ("immich_tui.app", "immich_tui.cli", "immich_tui.widgets", "immich_tui.demo")


def tools_stages() -> list[Stage]:
    return stages(DOCKERFILE)


# Dockerfile ----------------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_a_shell_less_non_root_runtime():
    all_stages = tools_stages()
    assert len(all_stages) == 2, "a builder and the runtime"
    builder, final = all_stages
    for stage in all_stages:
        repo, _, tag = stage.base.split("@")[0].rpartition(":")
        assert repo and "/" not in tag, f"{stage.base}: pin base images by tag (or digest)"
        assert tag != "latest", f"{stage.base}: no :latest"
    # the same bases as the sync image: Debian 12's Python 3.11, in the builder and the runtime
    assert [s.base for s in all_stages] == [s.base for s in stages()]
    assert final.base.startswith("gcr.io/distroless/python3-debian12:"), final.base
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", builder.base), builder.base
    assert builder.name and all(f"--from={builder.name}" in a for a in final.all("COPY")), "runtime copies the build"

    assert final.all("RUN") == [] and final.all("SHELL") == [], "no shell in the runtime"
    assert final.last("USER") == "65532:65532"
    entrypoint = exec_form(final.last("ENTRYPOINT"))
    assert entrypoint[0] == "/usr/bin/python3"
    assert entrypoint[1:] == ["-m", "immich_tui.plugin"], "no console script in the image: the package runs"
    assert exec_form(final.last("CMD")) == ["--help"]

    assert final.env() == stages()[-1].env(), "the sync image's interpreter settings"
    assert final.env()["PYTHONSAFEPATH"] == "1"
    labels = final.last("LABEL")
    assert 'org.opencontainers.image.title="immich-backup"' in labels
    for key in ("description", "version", "revision", "source", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert f"ARG VERSION={pyproject['project']['version']}" in [f"ARG {a}" for a in final.all("ARG")]


def test_builder_installs_only_the_lock_and_the_plugins_sources():
    builder = tools_stages()[0]
    assert context_sources(builder) == COPIED
    install = next(a for a in builder.all("RUN") if "pip install" in a)
    for flag in ("--require-hashes", "--no-deps", "--only-binary=:all:", "--target /app/site"):
        assert flag in install, flag
    [compile_all] = [a for a in builder.all("RUN") if "compileall" in a]
    for path in ("/app/site", "/app/sync_engine", "/app/immich_tui"):
        assert path in compile_all.split(), path


def test_dockerignore_sends_only_what_the_image_copies():
    patterns = [p.strip() for p in TOOLS_DOCKERIGNORE.read_text("utf-8").splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert patterns[0] == "*", "deny everything, then allow what the build copies"
    assert sorted(p[1:] for p in patterns if p.startswith("!")) == sorted(COPIED)
    assert {"**/__pycache__", "**/*.py[cod]"} <= set(patterns)
    # the root .dockerignore stays the sync image's: it must not start sending the plugin
    root_allowed = {p.strip()[1:] for p in DOCKERIGNORE.read_text("utf-8").splitlines() if p.startswith("!")}
    assert not {s for s in COPIED if s.startswith("immich_tui")} & root_allowed


# The plugin's import graph, read from the sources ------------------------------------------------------


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def plugin_graph() -> tuple[set[str], set[str], set[str]]:
    """(project modules, third-party imports, third-party imports guarded by `except ImportError`) reached
    from the plugin's entry module, lazily imported modules included, the `tui` command's module excluded."""
    seen: set[str] = set()
    third: set[str] = set()
    optional: set[str] = set()
    todo = [ENTRY]
    while todo:
        name = todo.pop()
        if name in seen or name == TUI_ONLY:
            continue
        path = module_file(name)
        assert path, f"{name} is imported but has no source"
        seen.add(name)
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]  # parent packages
        tree = ast.parse(path.read_text("utf-8"))
        guarded = _guarded(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for imported in names:
                top = imported.split(".")[0]
                if top in ("immich_tui", "sync_engine"):
                    if module_file(imported):
                        todo.append(imported)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    (optional if node in guarded else third).add(top)
    return seen, third, optional - third


def test_the_plugin_needs_no_terminal_ui_library():
    modules, third, optional = plugin_graph()
    assert ENTRY in modules and "immich_tui.services.drill_run" in modules
    assert not [m for m in modules if m.startswith(NOT_COPIED)], "the plugin's commands need the Textual app"
    assert third == {"botocore", "croniter", "humanize", "kubernetes", "urllib3", "yaml"}
    assert optional == set(), "nothing optional: every third-party module the plugin imports is locked"


# Lock ----------------------------------------------------------------------------------------------------


def requires(name: str) -> set[str]:
    """The dependencies the development virtualenv's copy of a distribution declares (no extras)."""
    out: set[str] = set()
    for requirement in map(Requirement, metadata.distribution(name).requires or []):
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            out.add(canonicalize_name(requirement.name))
    return out


def test_lock_pins_and_hashes_every_requirement_and_fits_the_project():
    lock = locked(LOCK)  # asserts == pins and sha256 hashes on every entry
    assert not NOT_IN_IMAGE_DISTS & set(lock), "no terminal UI, sandbox or test tools"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    for dependency in map(Requirement, pyproject["project"]["dependencies"]):
        name = canonicalize_name(dependency.name)
        if name in lock:
            assert dependency.specifier.contains(lock[name][0], prereleases=True), f"{name}: {dependency}"
    # the versions the test suite runs
    assert {name: metadata.version(name) for name in lock} == {name: v for name, (v, _) in lock.items()}

    # exactly the distributions of the plugin's imports and what they depend on
    _, third, _ = plugin_graph()
    providers = metadata.packages_distributions()
    wanted = {canonicalize_name(d) for top in third for d in providers[top]}
    closure: set[str] = set()
    todo = list(wanted)
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            todo += requires(name)
    assert set(lock) == closure


# The image's runtime, rebuilt --------------------------------------------------------------------------


def copy_into(root: Path, sources: list[str], dest: str) -> None:
    """COPY's meaning: a directory's contents into dest, a file into the directory dest."""
    target = root / dest.lstrip("/")
    for source in sources:
        path = ROOT / source
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.py[cod]")
            shutil.copytree(path, target, ignore=ignore, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)


@pytest.fixture(scope="session")
def tools_runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    """The builder's steps in order: the lock installed as its RUN does (pip's wheel cache keeps reruns
    offline), then each COPY of sources into /app."""
    builder, final = tools_stages()
    root = tmp_path_factory.mktemp("tools-image")
    install_lock(LOCK, root / "app" / "site")
    shutil.rmtree(root / "app" / "site" / "bin", ignore_errors=True)
    for args in builder.all("COPY"):
        *sources, dest = args.split()
        if dest.startswith("/app/"):
            copy_into(root, sources, dest)
    env = final.env()
    env["PYTHONPATH"] = ":".join(str(root) + entry for entry in env["PYTHONPATH"].split(":"))
    env |= {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(root / "nonexistent-home")}
    return Runtime(root, env, exec_form(final.last("ENTRYPOINT")), exec_form(final.last("CMD")))


def plugin(runtime: Runtime, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return runtime.run(*runtime.entrypoint[1:], *argv, env=env)


def test_version_is_the_project_version(tools_runtime: Runtime):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    done = plugin(tools_runtime, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{PROG} {version}"


def test_default_command_and_drill_help_run_from_the_image_layout(tools_runtime: Runtime):
    default = plugin(tools_runtime, *tools_runtime.cmd)
    assert default.returncode == 0, default.stderr
    assert default.stdout.startswith(f"usage: {PROG} ") and " drill " in default.stdout
    done = plugin(tools_runtime, "drill", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {PROG} drill "), done.stdout
    assert done.stderr == ""
    cronjob = yaml.safe_load(CRONJOB.read_text("utf-8"))
    [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    flags = [a for a in container["args"] if a.startswith("--")]
    options = plugin(tools_runtime, "options")  # the global flags, which every command accepts
    assert options.returncode == 0, options.stderr
    missing = [flag for flag in flags if f"{flag} " not in done.stdout + options.stdout]
    assert flags and missing == [], "every flag the CronJob passes is the drill's or a global one"


def cronjob_args(scratch: Path) -> list[str]:
    cronjob = yaml.safe_load(CRONJOB.read_text("utf-8"))
    [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return [str(scratch) if a == "/scratch" else a for a in container["args"]]


@pytest.mark.parametrize("how", ["bare", "cronjob"])
def test_drill_without_a_cluster_or_credentials_fails_with_one_line(tools_runtime: Runtime, how: str):
    """No kubeconfig, no service account, no keys: one line naming what is missing, exit 2, no traceback, and
    nothing created (the CronJob's scratch directory stays empty)."""
    root = tools_runtime.root
    scratch = root / "scratch"
    (root / "secrets").mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    if how == "bare":
        done = plugin(tools_runtime, "drill")
    else:  # the CronJob's arguments and environment, paths under the rebuilt root
        env = {"IMMICH_SYNC_SECRETS_DIR": str(root / "secrets"), "HOME": str(root / "tmp"), "TZ": "Etc/UTC"}
        done = plugin(tools_runtime, *cronjob_args(scratch), env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"{PROG}: error: ") and re.search(r"credentials|kubeconfig|cluster", line), line
    assert done.stdout == ""
    assert list(scratch.iterdir()) == []


def test_the_terminal_ui_is_refused_in_one_line_where_it_is_not_installed(tools_runtime: Runtime):
    """The image carries the plugin's commands, not the Textual app: `tui` says so instead of a traceback."""
    done = plugin(tools_runtime, "tui")
    assert done.returncode == 2, (done.stdout, done.stderr)
    [line] = done.stderr.splitlines()
    assert line == (
        f"{PROG}: error: tui: the terminal UI is not installed here; run it where immich-offsite-backup is installed"
    )
    assert done.stdout == ""


PROBE = """
import importlib, importlib.util, json, pkgutil, sys
wanted = json.loads(sys.argv[1])
importlib.import_module(wanted["entry"])
for_plugin = sorted({m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names) - {"__main__"})
modules = []
for package in ("immich_tui", "sync_engine"):
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if not info.name.endswith(".__main__"):
            importlib.import_module(info.name)
            modules.append(info.name)
files = [m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)]
print(json.dumps({
    "for_plugin": for_plugin,
    "modules": modules,
    "path": sys.path,
    "files": files,
    "absent": [n for n in wanted["absent"] if importlib.util.find_spec(n) is None],
}))
"""


def test_lock_is_complete_and_nothing_else_is_installed(tools_runtime: Runtime):
    lock = locked(LOCK)
    site = tools_runtime.site
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions(path=[str(site)])}
    assert {name: d.version for name, d in installed.items()} == {name: v for name, (v, _) in lock.items()}
    for dist in installed.values():  # closed under dependencies (no extras, this interpreter's markers)
        for requirement in map(Requirement, dist.requires or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                assert canonicalize_name(requirement.name) in lock, f"{dist.metadata['Name']} needs {requirement}"
    assert sorted(p.name for p in (tools_runtime.root / "app").iterdir()) == ["immich_tui", "site", "sync_engine"]

    absent = [*NOT_IN_IMAGE, "kubernetes_validate", *NOT_COPIED]
    probe = tools_runtime.run("-c", PROBE, json.dumps({"entry": ENTRY, "absent": absent}))
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    assert seen["absent"] == absent, "importable in the image's runtime, but must not be"
    # what importing the plugin loads (from /app alone: `outside` below)
    assert set(seen["for_plugin"]) >= {"immich_tui", "sync_engine", "kubernetes", "yaml", "botocore", "croniter"}
    # every module the image copies imports with the lock alone; the plugin's graph is all there
    graph, _, _ = plugin_graph()
    assert graph <= set(seen["modules"]) | {"immich_tui", "sync_engine"}
    extra = set(seen["modules"]) - graph
    assert all(m.startswith("immich_tui.services.") or m.startswith("sync_engine.") for m in extra), extra
    outside = [f for f in seen["files"] if not f.startswith((str(tools_runtime.root), sys.base_prefix))]
    assert outside == [], "loaded from outside the image's /app and the standard library"
    checkout = [p for p in seen["path"] if p.startswith(str(ROOT)) and not p.startswith(str(tools_runtime.root))]
    assert checkout == [] and not [p for p in seen["path"] if "site-packages" in p], seen["path"]
