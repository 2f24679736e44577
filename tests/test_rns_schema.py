"""The RNS metadata standard: per-type fields, named errors for broken records, loaders, no secret values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rns_helpers import hermetic_git, init_repo

import rh_iac
from rh_iac.errors import (
    RecordCorruptError,
    RecordFieldError,
    RNSError,
    SecretInRecordError,
    UnsupportedSchemaError,
)
from rh_iac.model import Cluster, Env, Folder, Secret, Stack, Table
from rh_iac.project import Project
from rh_iac.rns import validate_record
from rh_iac.rns.schema import TYPES, build_resource

CANARY = "schema-canary-9f1e2d"


@pytest.fixture(autouse=True)
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return hermetic_git(tmp_path, monkeypatch)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(init_repo(tmp_path / "project"))


def cluster_record(**spec: object) -> dict:
    base = {"workers": 2, "min_workers": None, "max_workers": None, "threads_per_worker": 1, "memory_limit": "auto",
            "autostop_mins": 60, "env": None}
    return {"schema_version": 1, "name": "dev-cluster", "type": "cluster", "provider": "local", "stack": "local",
            "engine": "terraform", "spec": {**base, **spec}, "outputs": {}, "status": "deployed"}


def test_records_written_by_a_deploy_are_valid() -> None:
    with Stack("local") as stack:
        env = Env("py", packages=["numpy"])
        Cluster("dev-cluster", workers=2, env=env)
        Cluster("elastic", min_workers=1, max_workers=4)
        folder = Folder("datasets")
        Table("flights", folder=folder, partition_on=["carrier"])
        Secret("demo-token", from_env="X", generate=True)
        Secret("vaulted", store="vault")
    for resource in stack:
        record = {"schema_version": 1, "name": resource.name, "type": resource.kind, "provider": "local",
                  "stack": "local", "engine": "terraform", "spec": resource.spec(), "outputs": {}, "status": "deployed"}
        assert validate_record(record, f"rns/{resource.name}.json") is record


def test_a_hand_broken_field_names_file_field_and_fix() -> None:
    with pytest.raises(RecordFieldError) as info:
        validate_record(cluster_record(workers="two"), "rns/dev-cluster.json")
    assert str(info.value) == ("rns/dev-cluster.json: spec.workers must be an integer or null, got 'two'; fix it or "
                               "restore it with `invoke rns.rollback dev-cluster 1`.")
    assert isinstance(info.value, RecordCorruptError)
    with pytest.raises(RecordFieldError, match=r"rns/dev-cluster.json: spec.threads_per_worker must be an integer"):
        validate_record(cluster_record(threads_per_worker=True), "rns/dev-cluster.json")  # a bool is no integer
    with pytest.raises(RecordFieldError, match=r"rns/x.json: spec.folder is missing"):
        validate_record({"name": "x", "type": "table", "spec": {}}, "rns/x.json")
    with pytest.raises(RecordFieldError, match=r"rns/x.json: spec.colour is not a field of a folder record"):
        validate_record({"name": "x", "type": "folder", "spec": {"path": None, "colour": "red"}}, "rns/x.json")
    with pytest.raises(RecordFieldError, match=r"rns/x.json: type 'gizmo' is not a known resource type"):
        validate_record({"name": "x", "type": "gizmo"}, "rns/x.json")
    with pytest.raises(RecordFieldError, match=r"rns/x.json: outputs must be an object, got \[\]"):
        validate_record({"name": "x", "type": "folder", "outputs": []}, "rns/x.json")
    with pytest.raises(RecordFieldError, match=r"rns/x.json: pinned.version is missing"):
        validate_record({"name": "x", "type": "folder", "pinned": {"spec": {}}}, "rns/x.json")


def test_newer_schema_versions_are_refused_and_version_1_is_read() -> None:
    assert validate_record({"name": "x", "type": "folder"}, "rns/x.json")  # no schema_version: version 1
    with pytest.raises(UnsupportedSchemaError, match=r"rns/x.json: schema_version 7 is not one this rh_iac reads"):
        validate_record({"schema_version": 7, "name": "x", "type": "folder"}, "rns/x.json")


def test_a_secret_value_is_never_written(project: Project) -> None:
    rns = project.rns()
    for record in (
        {"name": "tok", "type": "secret", "spec": {"from_env": "X", "value": CANARY}},
        {"name": "tok", "type": "secret", "outputs": {"fingerprint": "ab", "value": CANARY}},
        {"name": "tok", "type": "secret", "value": CANARY},
    ):
        with pytest.raises(SecretInRecordError, match=r"rns/tok.json: .*value would hold a secret's value"):
            rns.write(record)
        with pytest.raises(SecretInRecordError):
            validate_record(record, "rns/tok.json")
    assert not (project.root / "rns").exists()  # refused before anything was written
    assert rns.write({"name": "tok", "type": "secret", "spec": {"from_env": "X", "generate": False},
                      "outputs": {"fingerprint": "ab12"}}) is True
    assert CANARY not in (project.root / "rns" / "tok.json").read_text()


@pytest.mark.parametrize("kind", [k for k, s in TYPES.items() if s.build is not None])
def test_every_buildable_type_round_trips_its_spec(kind: str) -> None:
    with Stack("s") as stack:
        env, folder = Env("py", packages=["x"]), Folder("f", path="/tmp/x")
        declared = {"cluster": lambda: Cluster("r", workers=3, env=env), "folder": lambda: Folder("r", path="/d"),
                    "table": lambda: Table("r", folder=folder, partition_on=["a"]),
                    "blob": lambda: __import__("rh_iac").Blob("r", folder=folder),
                    "secret": lambda: Secret("r", from_env="V"), "env": lambda: Env("r", setup=["true"])}[kind]()
    rebuilt = build_resource(kind, "r", declared.spec(), "local", lambda name: stack[name])
    assert type(rebuilt) is type(declared) and rebuilt.spec() == declared.spec()


def test_load_dispatches_by_type_and_binds_dependencies(project: Project, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "flights").mkdir(parents=True)
    rns = project.rns()
    rns.write({"schema_version": 1, "name": "datasets", "type": "folder", "provider": "local", "stack": "local",
               "spec": {"path": None}, "outputs": {"url": data.as_uri()}, "status": "deployed"}, folder="/team")
    rns.write({"schema_version": 1, "name": "flights", "type": "table", "provider": "local", "stack": "local",
               "spec": {"folder": "datasets", "format": "parquet", "partition_on": []},
               "outputs": {"url": (data / "flights").as_uri()}, "status": "deployed"}, folder="/team")
    (data / "hello.txt").write_text("hi")
    folder = rh_iac.load("/team/datasets", project=project)
    assert isinstance(folder, Folder) and folder.url == data.as_uri() and "hello.txt" in folder.ls()
    table = rh_iac.load("/team/flights", project=project)
    assert isinstance(table, Table) and table.folder.name == "datasets"  # resolved in the table's own folder
    assert table.folder.url == data.as_uri()


def test_a_table_record_pointing_outside_its_folder_is_refused(project: Project, tmp_path: Path) -> None:
    """Writing a table replaces its directory: a record (hand-edited, or pulled) whose URL leaves the folder must
    not load, so nothing can be pointed at /etc through RNS."""
    data = tmp_path / "data"
    rns = project.rns()
    rns.write({"schema_version": 1, "name": "datasets", "type": "folder", "provider": "local", "stack": "local",
               "spec": {"path": None}, "outputs": {"url": data.as_uri()}, "status": "deployed"})
    table = {"schema_version": 1, "name": "flights", "type": "table", "provider": "local", "stack": "local",
             "spec": {"folder": "datasets", "format": "parquet", "partition_on": []}, "status": "deployed"}
    for outside in ("file:///etc", data.as_uri(), (tmp_path / "data-other" / "flights").as_uri()):
        rns.write({**table, "outputs": {"url": outside}})
        with pytest.raises(RecordFieldError, match=r"'flights' \(table\): outputs.url .* is not inside its folder"):
            rh_iac.load("flights", project=project)
    rns.write({**table, "outputs": {"url": (data / "flights").as_uri()}})
    assert rh_iac.load("flights", project=project).url == (data / "flights").as_uri()


def test_load_of_a_corrupt_record_names_the_file_and_field(project: Project) -> None:
    rns = project.rns()
    rns.write(cluster_record(workers="two"))
    with pytest.raises(RecordFieldError, match=r"^rns/dev-cluster.json: spec.workers must be an integer or null, "
                                               r"got 'two'; fix it or restore it with `invoke rns.rollback"):
        rh_iac.load("dev-cluster", project=project)
    (project.root / "rns" / "dev-cluster.json").write_text('{"name": "dev-cluster", ')
    with pytest.raises(RecordCorruptError, match="dev-cluster.json is not valid JSON"):
        rh_iac.load("dev-cluster", project=project)
    rns.write({"schema_version": 1, "name": "t", "type": "table", "spec": {"folder": "missing-folder"}})
    with pytest.raises(RNSError, match="no RNS record for 'missing-folder'"):
        rh_iac.load("t", project=project)


def test_metadata_only_types_are_not_loadable(project: Project) -> None:
    project.rns().write({"schema_version": 1, "name": "run-1", "type": "run", "spec": {"reads": []}})
    with pytest.raises(RNSError, match="metadata only"):
        rh_iac.load("run-1", project=project)
    assert json.loads((project.root / "rns" / "run-1.json").read_text())["type"] == "run"
