"""Validation against the CNPG CRD schemas vendored in tests/crds/ (CNPG 1.30, Barman Cloud Plugin 0.14)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).parent / "crds"
CNPG_GROUPS = ("postgresql.cnpg.io", "barmancloud.cnpg.io")


@cache
def schema(group: str, kind: str) -> dict[str, Any]:
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind:
            version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
            return version["schema"]["openAPIV3Schema"]
    raise KeyError(f"no CRD for {kind}.{group}")


def validate(obj: dict[str, Any]) -> None:
    group = obj["apiVersion"].split("/")[0]
    jsonschema.validate(obj, schema(group, obj["kind"]))
