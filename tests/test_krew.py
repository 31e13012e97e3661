"""The krew plugin manifest (deploy/krew/immich-backup.yaml) passes the checks krew and krew-index apply.

The rules are krew's own (internal/index/validation/validate.go, internal/installation/semver and
cmd/validate-krew-manifest): the file name is the plugin's name, a safe name, the current apiVersion and
kind, a one-line short description, a semantic version with a `v`, per platform a uri, a 64-hex sha256, a
bin, well-formed `files`, a selector on `os`/`arch` only that matches a platform krew supports, and no
platform selected twice. On top, what only a build can tell: the sha256 is that of the archive
`make krew` builds, and the archive holds the bin and a LICENSE where `files` expects them.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import io
import re
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KREW = ROOT / "deploy" / "krew"
MANIFEST = KREW / "immich-backup.yaml"

API_VERSION = "krew.googlecontainertools.github.com/v1alpha2"
SAFE_NAME = re.compile(r"^[\w-]+$")
WINDOWS_FORBIDDEN = {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)), *(f"LPT{n}" for n in range(1, 10))}
SHA256 = re.compile(r"^[a-f0-9]{64}$")
# k8s.io/apimachinery/pkg/util/version ParseSemantic, after krew's own check for the leading `v`
SEMVER = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
# cmd/validate-krew-manifest allPlatforms(): the <os, arch> pairs krew installs on
PLATFORMS = [
    ("windows", "386"),
    ("windows", "amd64"),
    ("windows", "arm64"),
    ("linux", "386"),
    ("linux", "amd64"),
    ("linux", "arm"),
    ("linux", "arm64"),
    ("linux", "ppc64le"),
    ("darwin", "386"),
    ("darwin", "amd64"),
    ("darwin", "arm64"),
]
# krew-index's naming guide keeps the one-line summary shorter than this (`kubectl krew search` shows it)
SHORT_DESCRIPTION_MAX = 50
LICENSE_NAMES = {"license", "license.txt", "license.md", "licenses", "licenses.txt", "licenses.md", "copying"}


def _package() -> Any:
    """deploy/krew/package.py, the release build `make krew` runs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("krew_package", KREW / "package.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """metav1.LabelSelectorAsSelector(...).Matches: matchLabels and every matchExpression must hold."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def _selector_problem(selector: Any) -> str | None:
    if selector is None:
        return "nil selector is not supported"
    labels, exprs = selector.get("matchLabels"), selector.get("matchExpressions")
    if labels is None and not exprs:
        return "empty selector is not supported"
    keys = [*(labels or {}), *(e.get("key") for e in exprs or [])]
    for key in keys:
        if key not in ("os", "arch"):
            return f"key {key!r} not supported"
    if labels is not None and len(labels) == 0:
        return "`matchLabels` specified but empty"
    if exprs is not None and len(exprs) == 0:
        return "`matchExpressions` specified but empty"
    return None


def _platform_problem(platform: dict[str, Any]) -> str | None:
    if not platform.get("uri"):
        return "`uri` has to be set"
    if not str(platform["uri"]).startswith("https://"):
        return f"`uri` {platform['uri']} is not https"
    if not platform.get("sha256"):
        return "`sha256` sum has to be set"
    if not SHA256.match(str(platform["sha256"])):
        return f"`sha256` value {platform['sha256']} is not valid"
    if not platform.get("bin"):
        return "`bin` has to be set"
    files = platform.get("files")
    if files is not None:
        if len(files) == 0:
            return "`files` has to be unspecified or non-empty"
        for op in files:
            if not op.get("from"):
                return "`from` field has to be set"
            if not op.get("to"):
                return "`to` field has to be set"
    return _selector_problem(platform.get("selector"))


def validate(name: str, plugin: dict[str, Any]) -> list[str]:
    """Every rule krew's ValidatePlugin and validate-krew-manifest apply before installing; [] when valid."""
    problems = []
    if plugin.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion={plugin.get('apiVersion')!r} is not supported")
    if plugin.get("kind") != "Plugin":
        problems.append(f"kind={plugin.get('kind')!r}, only 'Plugin' is supported")
    if not SAFE_NAME.match(name) or name.upper() in WINDOWS_FORBIDDEN:
        problems.append(f"the plugin name {name!r} is not allowed")
    if (plugin.get("metadata") or {}).get("name") != name:
        problems.append(f"plugin should be named {name!r}")
    spec = plugin.get("spec") or {}
    short = str(spec.get("shortDescription") or "")
    if not short:
        problems.append("should have a short description")
    if "\r" in short or "\n" in short:
        problems.append("should not have line breaks in short description")
    if len(short) >= SHORT_DESCRIPTION_MAX:
        problems.append(f"short description is {len(short)} characters, keep it under {SHORT_DESCRIPTION_MAX}")
    if not spec.get("homepage", "").startswith("https://"):
        problems.append("homepage should be an https URL")
    platforms = spec.get("platforms") or []
    if not platforms:
        problems.append("should have a platform specified")
    version = str(spec.get("version") or "")
    if not version:
        problems.append("should have a version specified")
    elif not SEMVER.match(version):
        problems.append(f"version {version!r} is not a semantic version starting with 'v'")
    for i, platform in enumerate(platforms):
        problem = _platform_problem(platform)
        if problem:
            problems.append(f"platform {i} is badly constructed: {problem}")
    if problems:
        return problems
    for i, platform in enumerate(platforms):
        if not any(_matches(platform["selector"], {"os": o, "arch": a}) for o, a in PLATFORMS):
            problems.append(f"spec.platform[{i}]'s selector doesn't match any supported platforms")
    for os_name, arch in PLATFORMS:
        chosen = [i for i, p in enumerate(platforms) if _matches(p["selector"], {"os": os_name, "arch": arch})]
        if len(chosen) > 1:
            problems.append(f"multiple spec.platforms (at indexes {chosen}) select {os_name}/{arch}")
    return problems


def _installed(platform: dict[str, Any], members: list[str]) -> set[str]:
    """The names krew's file operations put in the plugin's folder (`to: .` keeps the base name)."""
    placed = set()
    for op in platform.get("files") or [{"from": "*", "to": "."}]:
        for member in members:
            if fnmatch.fnmatchcase(member, op["from"]):
                placed.add(Path(member).name if op["to"] == "." else op["to"])
    return placed


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text())


def test_manifest_passes_krews_validation(manifest: dict[str, Any]) -> None:
    assert validate(MANIFEST.stem, manifest) == []
    assert MANIFEST.suffix == ".yaml"
    assert manifest["metadata"]["name"] == "immich-backup"


def test_manifest_version_is_the_package_version(manifest: dict[str, Any]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert manifest["spec"]["version"] == f"v{version}"
    launcher = (KREW / "kubectl-immich_backup").read_text()
    assert f"\nVERSION={version}\n" in launcher
    for platform in manifest["spec"]["platforms"]:
        assert platform["uri"].endswith(f"/releases/download/v{version}/immich-backup-v{version}.tar.gz")


def test_sha256_is_that_of_the_archive_make_krew_builds(manifest: dict[str, Any]) -> None:
    package = _package()
    body = package.build()
    assert body == package.build()  # reproducible: the release upload is byte for byte this
    digest = hashlib.sha256(body).hexdigest()
    for platform in manifest["spec"]["platforms"]:
        assert platform["sha256"] == digest, "run `make krew` to refresh the manifest's sha256"
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        launcher = tar.extractfile("kubectl-immich_backup")
        assert launcher is not None and launcher.read().startswith(b"#!/bin/sh\n")
    assert members["kubectl-immich_backup"].mode & 0o111
    for platform in manifest["spec"]["platforms"]:
        placed = _installed(platform, sorted(members))
        assert platform["bin"] in placed
        assert {name.lower() for name in placed} & LICENSE_NAMES


BAD = {
    "name not the file's": lambda p: p["metadata"].update(name="immich"),
    "version without v": lambda p: p["spec"].update(version="0.1.0"),
    "version not semver": lambda p: p["spec"].update(version="v0.1"),
    "short sha256": lambda p: p["spec"]["platforms"][0].update(sha256="abc123"),
    "upper-case sha256": lambda p: p["spec"]["platforms"][0].update(sha256="A" * 64),
    "http uri": lambda p: p["spec"]["platforms"][0].update(uri="http://example.invalid/a.tar.gz"),
    "no bin": lambda p: p["spec"]["platforms"][0].pop("bin"),
    "empty files": lambda p: p["spec"]["platforms"][0].update(files=[]),
    "file without to": lambda p: p["spec"]["platforms"][0]["files"][0].pop("to"),
    "selector key": lambda p: p["spec"]["platforms"][0]["selector"]["matchLabels"].update(distro="debian"),
    "no selector": lambda p: p["spec"]["platforms"][0].pop("selector"),
    "duplicate platform": lambda p: p["spec"]["platforms"].append(copy.deepcopy(p["spec"]["platforms"][0])),
    "unsupported platform": lambda p: p["spec"]["platforms"][0].update(selector={"matchLabels": {"os": "plan9"}}),
    "two-line short description": lambda p: p["spec"].update(shortDescription="Immich\nbackups"),
    "long short description": lambda p: p["spec"].update(shortDescription="x" * 60),
    "old apiVersion": lambda p: p.update(apiVersion="krew.googlecontainertools.github.com/v1alpha1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_validation_rejects_what_krew_rejects(manifest: dict[str, Any], case: str) -> None:
    broken = copy.deepcopy(manifest)
    BAD[case](broken)
    assert len(validate(MANIFEST.stem, broken)) >= 1
