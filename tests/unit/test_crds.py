"""The CRDs in crds/ are exactly what the models generate, and are structural."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_api import conditions, constants, crdgen, migration, nodehelper
from ferry_api.base import SpecModel
from ferry_api.migration import ContainerMigrationSpec
from pydantic import Field

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_crds_match_the_models() -> None:
    problems = crdgen.drift(CRDS)
    assert not problems, "crds/ is out of date with api/ferry_api: run `make crds`\n" + "\n".join(
        problems
    )


def test_check_exits_non_zero_on_drift(tmp_path: Path) -> None:
    crdgen.write(tmp_path)
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 0
    edited = tmp_path / "ferry.dev_containermigrations.yaml"
    edited.write_text(edited.read_text().replace("default: 300", "default: 30"))
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-m",
            "ferry_api.crdgen",
            "--check",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "run `make crds`" in result.stderr
    assert "-                default: 30\n+                default: 300" in result.stderr


def test_check_reports_missing_and_stale_files(tmp_path: Path) -> None:
    crdgen.write(tmp_path)
    (tmp_path / "ferry.dev_nodehelpers.yaml").unlink()
    (tmp_path / "ferry.dev_oldthings.yaml").write_text("# left over\n")
    problems = crdgen.drift(tmp_path)
    assert any(p.endswith("ferry.dev_nodehelpers.yaml: missing") for p in problems)
    assert any("ferry.dev_oldthings.yaml: not generated" in p for p in problems)
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1


def test_output_is_deterministic_and_has_the_header() -> None:
    first, second = crdgen.generate(), crdgen.generate()
    assert first == second
    assert sorted(first) == [
        "ferry.dev_containercheckpoints.yaml",
        "ferry.dev_containercheckpointschedules.yaml",
        "ferry.dev_containermigrations.yaml",
        "ferry.dev_containerrestores.yaml",
        "ferry.dev_migrationpolicies.yaml",
        "ferry.dev_nodeevacuations.yaml",
        "ferry.dev_nodehelpers.yaml",
        "ferry.dev_podmigrations.yaml",
    ]
    for text in first.values():
        assert text.startswith(crdgen.HEADER)


def _crd(plural: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CRDS / f"{constants.GROUP}_{plural}.yaml").read_text())
    return loaded


def _schema(plural: str) -> dict[str, Any]:
    schema: dict[str, Any] = _crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize(
    "plural", [constants.CONTAINER_MIGRATION_PLURAL, constants.NODE_HELPER_PLURAL]
)
def test_schemas_are_structural_and_described(plural: str) -> None:
    for path, node in _walk(_schema(plural)):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for banned in ("$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "const", "nullable"):
            assert banned not in node, f"{path}: {banned}"
        assert node.get("additionalProperties") is not False, path
        if path.count(".") >= 2 and not path.endswith("[]"):  # a field: kubectl explain shows it
            assert node.get("description"), f"{path} has no description"


def test_free_form_only_where_meant() -> None:
    free = [
        p
        for p, n in _walk(_schema("containermigrations"))
        if "x-kubernetes-preserve-unknown-fields" in n
    ]
    assert free == [".status.criuStatistics"]
    assert not [
        p for p, n in _walk(_schema("nodehelpers")) if "x-kubernetes-preserve-unknown-fields" in n
    ]


@pytest.mark.parametrize(
    ("plural", "path", "pattern"),
    [
        ("containermigrations", ".spec.source.node", migration.NODE_NAME_PATTERN),
        ("containermigrations", ".spec.target.node", migration.NODE_NAME_PATTERN),
        ("containermigrations", ".spec.source.container", migration.CONTAINER_PATTERN),
        ("containermigrations", ".status.conditions[].type", conditions.TYPE_PATTERN),
        ("containermigrations", ".status.conditions[].reason", conditions.REASON_PATTERN),
        ("nodehelpers", ".status.sshHostKey", nodehelper.SSH_PUBLIC_KEY_PATTERN),
        ("nodehelpers", ".status.conditions[].reason", conditions.REASON_PATTERN),
    ],
)
def test_patterns_reach_the_crd(plural: str, path: str, pattern: str) -> None:
    # Some pydantic constructs (a BeforeValidator beside a pattern) drop the
    # pattern from the JSON schema while still enforcing it in Python.
    assert dict(_walk(_schema(plural)))[path]["pattern"] == pattern


def test_spec_defaults_are_the_model_defaults() -> None:
    spec = _schema("containermigrations")["properties"]["spec"]
    defaults = {
        name: sub["default"] for name, sub in spec["properties"].items() if "default" in sub
    }
    model = ContainerMigrationSpec.model_validate({"source": {"node": "a", "container": "c"}})
    wire = model.model_dump(
        mode="json", by_alias=True, exclude={"source", "target"}, exclude_none=True
    )
    assert defaults == wire
    assert spec["properties"]["timeoutSeconds"]["minimum"] == 10
    assert spec["properties"]["timeoutSeconds"]["maximum"] == 3600
    assert spec["properties"]["compression"]["enum"] == ["zstd", "gzip", "none"]
    assert spec["required"] == ["source"]
    assert spec["properties"]["source"]["required"] == ["container", "node"]


def test_status_carries_no_defaults() -> None:
    for plural in ("containermigrations", "nodehelpers"):
        status = _schema(plural)["properties"]["status"]
        assert not [p for p, n in _walk(status) if "default" in n]


def test_spec_rules_and_list_maps() -> None:
    schema = _schema("containermigrations")
    rules = schema["properties"]["spec"]["x-kubernetes-validations"]
    assert {"rule": "self == oldSelf", "message": migration.IMMUTABLE_SPEC_MESSAGE} in rules
    listed = schema["properties"]["status"]["properties"]["conditions"]
    assert listed["x-kubernetes-list-type"] == "map"
    assert listed["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in listed["items"]["required"]
    times = schema["properties"]["status"]["properties"]
    assert times["startTime"] == {
        "description": "When the operator started the migration.",
        "type": "string",
        "format": "date-time",
    }


def test_names_scope_and_columns() -> None:
    migration = _crd("containermigrations")
    assert migration["metadata"]["name"] == "containermigrations.ferry.dev"
    assert migration["spec"]["scope"] == "Namespaced"
    assert migration["spec"]["names"]["shortNames"] == ["cmig"]
    assert migration["spec"]["names"]["categories"] == ["ferry"]
    version = migration["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Source", "Target", "Downtime", "Age"} <= set(columns)
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": "Time since creation.",
    }
    helper = _crd("nodehelpers")
    assert helper["spec"]["scope"] == "Cluster"
    assert helper["spec"]["names"]["shortNames"] == ["nh"]
    assert "spec" not in helper["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]


@pytest.mark.parametrize("plural", ["containermigrations", "nodehelpers"])
def test_printer_columns_point_at_fields_that_exist(plural: str) -> None:
    crd = _crd(plural)
    paths = {p for p, _ in _walk(_schema(plural))}
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        json_path = column["jsonPath"].split("[?", 1)[0]  # a filter selects items of a list
        if json_path.startswith(".metadata."):
            continue
        assert json_path in paths, f"{column['name']}: {column['jsonPath']}"


class _Union(SpecModel):
    value: int | str = Field(description="Either.")


class _Undescribed(SpecModel):
    value: int = 1


@pytest.mark.parametrize(
    ("model", "words"),
    [(_Union, "anyOf over 2 non-null schemas"), (_Undescribed, "needs a description")],
)
def test_constructs_without_a_structural_form_are_refused(
    model: type[SpecModel], words: str
) -> None:
    with pytest.raises(crdgen.UnsupportedSchemaError, match=words):
        crdgen.schema_for(model, path="spec", defaults=True)
