"""The local provider under Pulumi: its dynamic providers against real processes and folders (Pulumi does not call a
dynamic provider's create() under mocks, so their methods are called directly), and the rendering of stacks/local.py
under Pulumi's mocks: the dynamic resources, their inputs, and no secret value anywhere in them.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from pathlib import Path

import pulumi
import pytest

from conftest import CANARY, make_project
from rh_iac.providers.local import dask_cluster as dc
from rh_iac.providers.local import pulumi as target

pytestmark = pytest.mark.timeout(180)

CLUSTER_PROPS = {"name": "pc", "workers": 2, "min_workers": None, "max_workers": None, "threads_per_worker": 1,
                 "memory_limit": "1GiB", "autostop_mins": 30, "env_vars": {}, "env_name": None, "env_packages": None,
                 "env_setup": None, "scrub_env": ["RH_IAC_DEMO_TOKEN"]}


@pytest.fixture
def context(tmp_path, monkeypatch):
    """Inputs every local resource carries, for a state folder in tmp_path; every process started is killed after."""
    state_dir = tmp_path / "project" / ".rh_iac" / "t"
    state_dir.mkdir(parents=True)
    monkeypatch.setenv("RH_IAC_HOME", str(tmp_path / "home"))
    spawned: list[int] = []
    real_spawn = dc._spawn

    def spawn(*args, **kwargs):
        pid = real_spawn(*args, **kwargs)
        spawned.append(pid)
        return pid

    monkeypatch.setattr(dc, "_spawn", spawn)
    try:
        yield {"stack": "t", "state_dir": str(state_dir), "project_dir": str(tmp_path / "project")}, spawned
    finally:
        for pgid in dc._live_groups(set(spawned)):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        dc._reap()


def _alive(pids) -> list[int]:
    return sorted(dc._live_groups(set(pids)))


def test_cluster_create_read_drift_update_delete(context):
    ctx, spawned = context
    provider = target.DaskClusterProvider()
    props = {**ctx, **CLUSTER_PROPS}
    created = provider.create(props)
    assert created.id == "pc"
    outs = created.outs
    assert outs["scheduler_address"].startswith("tls://127.0.0.1:")
    assert len(outs["worker_pids"]) == 2 and set(outs["tls"]) >= {"ca_file", "client_cert", "client_key"}
    assert all(dc._alive(p) for p in [outs["scheduler_pid"], *outs["worker_pids"]])
    assert provider.diff("pc", outs, props).changes is False  # converged: nothing to do

    read = provider.read("pc", outs)  # reality matches
    assert read.id == "pc" and read.outs["workers"] == 2

    victim = outs["worker_pids"][0]
    os.killpg(victim, signal.SIGKILL)  # a worker dies outside rh_iac (the nanny's whole group)
    dc._reap()
    deadline = time.monotonic() + 10
    read = provider.read("pc", outs)
    while read.outs["workers"] != 1 and time.monotonic() < deadline:  # until the nanny's group is reaped
        time.sleep(0.1)
        read = provider.read("pc", outs)
    assert read.outs["workers"] == 1 and victim not in read.outs["worker_pids"]
    diff = provider.diff("pc", read.outs, props)
    assert diff.changes is True and not diff.replaces  # drift: the next up updates in place

    updated = provider.update("pc", read.outs, props).outs
    assert len(updated["worker_pids"]) == 2 and victim not in updated["worker_pids"]
    assert updated["scheduler_address"] == outs["scheduler_address"]  # the scheduler stayed
    bigger = {**props, "workers": 3}
    assert provider.diff("pc", updated, bigger).changes is True
    resized = provider.update("pc", updated, bigger).outs
    assert len(resized["worker_pids"]) == 3 and provider.read("pc", resized).outs["workers"] == 3

    provider.delete("pc", resized)
    assert _alive(spawned) == []  # every process, by PID
    assert provider.read("pc", resized).id == ""  # gone: Pulumi drops it and the next up re-creates it


def test_cluster_rename_replaces(context):
    ctx, _ = context
    olds = {**ctx, **CLUSTER_PROPS, "scheduler_address": "tls://127.0.0.1:1"}
    diff = target.DaskClusterProvider().diff("pc", olds, {**ctx, **CLUSTER_PROPS, "name": "other"})
    assert diff.changes is True and diff.replaces == ["name"]


def test_folder_and_table_crud(context):
    ctx, _ = context
    folders, tables = target.FolderProvider(), target.TableProvider()
    folder = folders.create({**ctx, "name": "data", "path": None}).outs
    path = Path(ctx["state_dir"]) / "folders" / "data"
    assert folder["url"] == path.as_uri() and path.is_dir() and folder["created"] is True
    assert folders.read("data", folder).outs["url"] == folder["url"]

    table = tables.create({**ctx, "name": "t1", "folder_url": folder["url"], "partition_on": []}).outs
    assert table["url"] == (path / "t1").as_uri()
    assert tables.diff("t1", table, {**ctx, "name": "t1", "folder_url": folder["url"],
                                     "partition_on": ["a"]}).replaces == []
    assert tables.update("t1", table, {**table, "partition_on": ["a"]}).outs["partition_on"] == ["a"]
    moved = tables.diff("t1", table, {**table, "folder_url": "file:///elsewhere"})
    assert moved.changes and moved.replaces == ["folder_url"]
    (path / "t1").mkdir()
    (path / "t1" / "part.parquet").write_bytes(b"x")
    tables.delete("t1", table)
    assert not (path / "t1").exists()  # it created the directory: it removes it

    folders.delete("data", folder)
    assert not path.exists()
    assert folders.read("data", folder).id == ""  # drift: deleted outside -> re-created by the next up
    with pytest.raises(FileNotFoundError, match="t1"):
        tables.create({**ctx, "name": "t1", "folder_url": folder["url"], "partition_on": []})


def test_folder_at_user_path_is_kept(context, tmp_path):
    ctx, _ = context
    mine = tmp_path / "project" / "mine"
    mine.mkdir(parents=True)
    (mine / "keep.txt").write_text("x")
    folder = target.FolderProvider().create({**ctx, "name": "mine", "path": "mine"}).outs
    assert folder["url"] == mine.as_uri() and folder["created"] is False
    target.FolderProvider().delete("mine", folder)
    assert (mine / "keep.txt").read_text() == "x"


def test_secret_crud_never_holds_the_value(context, monkeypatch):
    ctx, _ = context
    secrets = target.SecretProvider()
    props = {**ctx, "name": "tok", "from_env": "RH_IAC_T_TOKEN", "generate": False}
    monkeypatch.delenv("RH_IAC_T_TOKEN", raising=False)
    from rh_iac.errors import SecretError

    with pytest.raises(SecretError, match="RH_IAC_T_TOKEN"):
        secrets.create(props)
    monkeypatch.setenv("RH_IAC_T_TOKEN", CANARY)
    outs = secrets.create(props).outs
    assert outs["fingerprint"] and CANARY not in repr(outs)
    assert secrets.read("tok", outs).outs["fingerprint"] == outs["fingerprint"]
    assert secrets.diff("tok", outs, props).changes is False  # same value: nothing to do

    monkeypatch.setenv("RH_IAC_T_TOKEN", CANARY + "-rotated")
    diff = secrets.diff("tok", outs, props)
    assert diff.changes is True and not diff.replaces  # a new value: an update, planned without the value
    rotated = secrets.update("tok", outs, props).outs
    assert rotated["fingerprint"] != outs["fingerprint"] and CANARY not in repr(rotated)

    secrets.delete("tok", rotated)
    assert secrets.read("tok", rotated).id == ""


# --- the rendering under Pulumi's mocks --------------------------------------------------------------------------
class RecordingMocks(pulumi.runtime.Mocks):
    """Records every resource registered; gives each dynamic resource plausible computed outputs."""

    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args):
        self.resources.append(args)
        outs = dict(args.inputs)
        if args.typ.endswith(":DaskCluster"):
            outs.update(scheduler_address="tls://127.0.0.1:8786", dashboard_url="http://127.0.0.1:8787/status",
                        tls={"ca_file": "/x/ca.pem"})
        elif args.typ.endswith((":Folder", ":Table")):
            outs["url"] = f"file:///mock/{args.name}"
        elif args.typ.endswith(":Secret"):
            outs["fingerprint"] = "fp-123"
        return f"{args.name}-id", outs

    def call(self, args):
        return {}, []


def _texts(value) -> list[str]:
    """Every string inside ``value``, base64 payloads (the pickled provider) decoded too."""
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _texts(v)]
    if isinstance(value, str):
        try:
            return [value, base64.b64decode(value, validate=True).decode("latin-1")]
        except ValueError:
            return [value]
    return []


def test_render_local_stack_under_mocks(tmp_path, monkeypatch):
    proj = make_project(tmp_path)
    monkeypatch.setenv("RH_IAC_PROJECT", str(proj.root))
    monkeypatch.setenv("RH_IAC_HOME", str(proj.home))
    monkeypatch.setenv("RH_IAC_DEMO_TOKEN", CANARY)
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="rh_iac", stack="local", preview=False)
    pulumi.runtime.set_all_config({})
    from rh_iac.engines.pulumi import main

    @pulumi.runtime.test
    def run():
        exported = main()
        assert sorted(exported) == ["datasets", "demo-token", "dev-cluster", "flights"]

        def check(values):  # once every resource is registered (registration is asynchronous)
            folder_url, address, fingerprint, table_url = values
            state_dir = str(proj.root / ".rh_iac" / "local")
            by_type = {r.typ.rsplit(":", 1)[-1]: r for r in mocks.resources}
            assert sorted(by_type) == ["DaskCluster", "Folder", "Secret", "Table"] and len(mocks.resources) == 4
            assert {r.typ.rsplit(":", 1)[0] for r in mocks.resources} == {"pulumi-python:dynamic/rh-local"}
            cluster, secret = by_type["DaskCluster"].inputs, by_type["Secret"].inputs
            assert by_type["DaskCluster"].name == "dev-cluster"
            assert (cluster["workers"], cluster["threads_per_worker"], cluster["state_dir"]) == (2, 1, state_dir)
            assert cluster["project_dir"] == str(proj.root) and cluster["scrub_env"] == ["RH_IAC_DEMO_TOKEN"]
            assert (secret["name"], secret["from_env"], secret["generate"]) == ("demo-token", "RH_IAC_DEMO_TOKEN",
                                                                               True)
            assert by_type["Folder"].inputs["name"] == "datasets" and by_type["Table"].inputs["name"] == "flights"
            assert by_type["Table"].inputs["folder_url"] == folder_url == "file:///mock/datasets"  # depends on it
            assert "__provider" in secret  # the pickled provider travels in the inputs: it must hold no value
            for resource in mocks.resources:
                assert not [t for t in _texts(resource.inputs) if CANARY in t], resource.name
            assert address == "tls://127.0.0.1:8786" and fingerprint == "fp-123"
            assert table_url == "file:///mock/flights"

        return pulumi.Output.all(exported["datasets"]["url"], exported["dev-cluster"]["scheduler_address"],
                                 exported["demo-token"]["fingerprint"], exported["flights"]["url"]).apply(check)

    run()
