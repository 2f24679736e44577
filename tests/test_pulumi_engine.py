"""The Pulumi engine without a Pulumi CLI (none can be installed here): the missing-CLI error through the library and
through `invoke deploy --engine pulumi`; engine selection errors; which stack file a Pulumi stack deploys (under
Pulumi's mocks); stack outputs -> RNS records that rh_iac.load() turns back into usable resources; the engine's
events -> plan changes and drift; the file backend and passphrase under the gitignored state folder.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pulumi
import pytest
from pulumi.automation import OutputValue
from pulumi.automation.events import EngineEvent

from conftest import CANARY, make_project
from rh_iac import operations
from rh_iac.engines import pulumi as engine
from rh_iac.errors import EngineNotAvailableError, StackFileError, UnknownEngineError
from rh_iac.project import Project
from rh_iac.rns.paths import portable

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def proj(tmp_path):
    return make_project(tmp_path)


@pytest.fixture
def no_cli(tmp_path, monkeypatch):
    """An environment where no pulumi CLI can be found: PATH (git only), PULUMI_HOME and HOME hold none."""
    empty = tmp_path / "git-only-bin"
    empty.mkdir()
    (empty / "git").symlink_to(shutil.which("git"))
    env = {"PATH": str(empty), "PULUMI_HOME": str(tmp_path / "pulumi-home"), "HOME": str(tmp_path / "no-home")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _assert_install_hint(message: str) -> None:
    assert "curl -fsSL https://get.pulumi.com | sh" in message
    assert "https://www.pulumi.com/docs/install/" in message
    assert "invoke deploy --stack local" in message  # the Terraform fallback for provider local


def _untouched(proj) -> None:
    """Nothing deployed nor written: no Pulumi state, no passphrase, no RNS commit."""
    assert not list(proj.root.glob(".rh_iac/*/pulumi*"))
    assert proj.commits() == 1


@pytest.mark.parametrize("op", ["deploy", "preview", "destroy"])
def test_missing_cli_through_the_library(proj, no_cli, op):
    with pytest.raises(EngineNotAvailableError) as err:
        getattr(operations, op)("local", Project(proj.root), engine="pulumi")
    _assert_install_hint(str(err.value))
    assert no_cli["PULUMI_HOME"] in str(err.value)  # it says where it looked
    _untouched(proj)


def test_missing_cli_through_invoke(proj, no_cli):
    run = proj.invoke("deploy", "--engine", "pulumi", "--stack", "local", check=False,
                      PATH=no_cli["PATH"], PULUMI_HOME=no_cli["PULUMI_HOME"], HOME=no_cli["HOME"])
    assert run.returncode == 1, run.stdout + run.stderr
    assert "EngineNotAvailableError" in run.stderr and "Traceback" not in run.stderr
    _assert_install_hint(run.stderr)
    _untouched(proj)


def test_unknown_engine_through_invoke(proj):
    run = proj.invoke("preview", "--engine", "bogus", check=False)
    assert run.returncode == 1 and "UnknownEngineError" in run.stderr and "terraform, pulumi" in run.stderr
    _untouched(proj)


def test_cli_found_on_path_or_in_pulumi_home(tmp_path):
    home = tmp_path / "ph"
    (home / "bin").mkdir(parents=True)
    cli = home / "bin" / "pulumi"
    cli.write_text("#!/bin/sh\n")
    env = {"PATH": str(tmp_path / "none"), "PULUMI_HOME": str(home), "HOME": str(tmp_path / "h")}
    with pytest.raises(EngineNotAvailableError):  # present but not executable: not a CLI
        engine.find_cli(env)
    cli.chmod(0o755)
    assert engine.find_cli(env) == cli
    on_path = tmp_path / "path-bin"
    on_path.mkdir()
    (on_path / "pulumi").write_text("#!/bin/sh\n")
    (on_path / "pulumi").chmod(0o755)
    assert engine.find_cli({**env, "PATH": str(on_path)}) == on_path / "pulumi"  # PATH first
    installer_default = tmp_path / "h" / ".pulumi" / "bin"
    installer_default.mkdir(parents=True)
    (installer_default / "pulumi").write_text("#!/bin/sh\n")
    (installer_default / "pulumi").chmod(0o755)
    assert engine.find_cli({**env, "PULUMI_HOME": ""}) == installer_default / "pulumi"


def test_bad_declaration_fails_before_the_engine_runs(proj, tmp_path, monkeypatch):
    """With a CLI present, an invalid stack still fails first: no Pulumi state, passphrase or commit."""
    from rh_iac.errors import InvalidSpecError

    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text("#!/bin/sh\necho 'the engine must not run' >&2\nexit 1\n")
    (bin_dir / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    proj.write_stack("broken", 'from rh_iac import Cluster, Stack\n\nwith Stack("broken", provider="local"):\n'
                               '    Cluster("c", workers=-1)\n')
    with pytest.raises(InvalidSpecError, match="'c'"):
        operations.deploy("broken", Project(proj.root), engine="pulumi")
    with pytest.raises(StackFileError, match="known stacks: broken, local"):
        operations.deploy("nope", Project(proj.root), engine="pulumi")
    _untouched(proj)


def test_unknown_engine_names_the_choices(proj):
    with pytest.raises(UnknownEngineError, match=r"'terrafrom'.*terraform, pulumi"):
        operations.deploy("local", Project(proj.root), engine="terrafrom")
    _untouched(proj)


def test_terraform_engine_refuses_cloud_providers_and_names_pulumi(proj):
    proj.write_stack("cloudy", 'from rh_iac import Folder, Stack\n\nwith Stack("cloudy", provider="aws"):\n'
                               '    Folder("lake")\n')
    with pytest.raises(EngineNotAvailableError, match=r"invoke deploy --engine pulumi --stack"):
        operations.deploy("cloudy", Project(proj.root))
    _untouched(proj)


def test_terraform_engine_given_a_pulumi_stack_names_the_pulumi_engine(proj):
    (proj.root / "Pulumi.aws-dev.yaml").write_text("config:\n  rh_iac:stack: local\n")
    with pytest.raises(StackFileError, match=r"'aws-dev' is a Pulumi stack.*--engine pulumi --stack aws-dev"):
        operations.preview("aws-dev", Project(proj.root))
    _untouched(proj)


# --- which stack file a Pulumi stack deploys ------------------------------------------------------------------------
class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.names: list[str] = []

    def new_resource(self, args):
        self.names.append(args.name)
        return f"{args.name}-id", {**args.inputs, "url": "file:///m", "scheduler_address": "tls://127.0.0.1:1",
                                   "fingerprint": "fp"}

    def call(self, args):
        return {}, []


def _run_program(proj, monkeypatch, pulumi_stack: str, config: dict[str, str]):
    monkeypatch.setenv("RH_IAC_PROJECT", str(proj.root))
    monkeypatch.setenv("RH_IAC_HOME", str(proj.home))
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="rh_iac", stack=pulumi_stack, preview=False)
    pulumi.runtime.set_all_config(config)
    result = {}

    @pulumi.runtime.test
    def run():
        result["exported"] = engine.main()
        return pulumi.Output.all(*(v for o in result["exported"].values() for v in o.values()))

    try:
        run()
    finally:
        pulumi.runtime.set_all_config({})
    return result["exported"], mocks


def test_program_selects_stack_by_pulumi_stack_name(proj, monkeypatch):
    exported, mocks = _run_program(proj, monkeypatch, "local", {})
    assert sorted(exported) == ["datasets", "demo-token", "dev-cluster", "flights"]
    assert sorted(mocks.names) == ["datasets", "demo-token", "dev-cluster", "flights"]


def test_program_selects_stack_by_config(proj, monkeypatch):
    proj.write_stack("other", 'from rh_iac import Folder, Stack\n\nwith Stack("other", provider="local"):\n'
                              '    Folder("other-data")\n')
    exported, _ = _run_program(proj, monkeypatch, "dev", {"rh_iac:stack": "other"})
    assert sorted(exported) == ["other-data"]  # config wins over the Pulumi stack's name
    exported, _ = _run_program(proj, monkeypatch, "local", {"rh_iac:stack": "other"})
    assert sorted(exported) == ["other-data"]


def test_pulumi_program_file_is_the_same_program(proj, monkeypatch):
    """What `pulumi up -s local` runs (pulumi_program/__main__.py at the repo root) renders the same resources."""
    import runpy

    from conftest import REPO

    monkeypatch.setenv("RH_IAC_PROJECT", str(proj.root))
    monkeypatch.setenv("RH_IAC_HOME", str(proj.home))
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="rh_iac", stack="local", preview=False)
    pulumi.runtime.set_all_config({})

    @pulumi.runtime.test
    def run():
        runpy.run_path(str(REPO / "pulumi_program" / "__main__.py"), run_name="__main__")

    run()  # waits until every registration has reached the mocks
    assert sorted(mocks.names) == ["datasets", "demo-token", "dev-cluster", "flights"]


def test_program_unknown_stack_lists_known_stacks(proj, monkeypatch):
    with pytest.raises(StackFileError, match=r"Pulumi stack 'nope'.*known stacks: local"):
        _run_program(proj, monkeypatch, "nope", {})
    with pytest.raises(StackFileError, match=r"rh_iac:stack='gone'.*known stacks: local"):
        _run_program(proj, monkeypatch, "dev", {"rh_iac:stack": "gone"})


def test_resolve_reads_the_stack_settings_file(proj):
    project = Project(proj.root)
    (proj.root / "Pulumi.dev.yaml").write_text("config:\n  rh_iac:stack: local\n  rh_iac:workers: 3\n")
    assert engine.resolve(project, "dev") == ("local", "dev")
    assert engine.resolve(project, "local") == ("local", "local")
    assert engine.resolve(project, "local", "dev") == ("local", "dev")
    with pytest.raises(StackFileError, match=r"deploys stack file 'local'.*--stack local"):
        engine.resolve(project, "aws", "dev")
    with pytest.raises(StackFileError, match="known stacks: local"):
        engine.resolve(project, "prod")
    (proj.root / "Pulumi.bad.yaml").write_text("config: [unclosed\n")
    with pytest.raises(StackFileError, match="Pulumi.bad.yaml"):
        engine.resolve(project, "bad")


# --- stack outputs -> RNS -----------------------------------------------------------------------------------------
def test_cloud_cluster_outputs_load_back_as_a_connected_resource(proj):
    from rh_iac import load
    from rh_iac.model import Cluster
    from rh_iac.providers import pulumi_target

    project = Project(proj.root)
    proj.write_stack("cloud", 'from rh_iac import Cluster, Folder, Secret, Stack\n\n'
                              'with Stack("cloud", provider="aws"):\n'
                              '    Cluster("cc", workers=3, allowed_cidrs=["203.0.113.0/24"])\n'
                              '    Folder("lake")\n'
                              '    Secret("tok", from_env="RH_IAC_T", generate=True)\n')
    stack = project.load_stack("cloud")
    state = project.state_dir("cloud")
    tls = {"ca_file": str(state / "tls" / "ca.pem"), "client_cert": str(state / "tls" / "client.pem"),
           "client_key": str(state / "tls" / "client.key")}
    outputs = {
        "cc": OutputValue({"scheduler_address": "tls://198.51.100.7:8786", "tls": tls, "status_url":
                           "s3://b/.rh_iac/cc/", "dashboard_url": "http://198.51.100.7:8787/status"}, False),
        "lake": OutputValue({"url": "s3://rh-cloud-lake/lake"}, False),
        "tok": OutputValue({"ref": "arn:aws:secretsmanager:us-east-1:1:secret:tok"}, False),
        "leak": OutputValue({"value": CANARY}, True),  # a secret output is never recorded
    }
    records = operations.pulumi_records(stack, outputs, pulumi_target("aws"), proj.root)
    assert [r["name"] for r in records] == ["cc", "lake", "tok"]
    assert {r["engine"] for r in records} == {"pulumi"} and {r["status"] for r in records} == {"deployed"}
    cluster_record = records[0]
    assert cluster_record["outputs"]["tls"]["ca_file"] == "{project}/.rh_iac/cloud/tls/ca.pem"  # portable
    assert CANARY not in repr(records)
    rns = project.rns()
    operations._write_records(rns, stack, records)
    rns.commit("rns: test")

    cluster = load("cc", project)
    assert isinstance(cluster, Cluster) and cluster.provider == "aws" and cluster.status == "deployed"
    assert cluster.outputs["scheduler_address"] == "tls://198.51.100.7:8786"
    assert cluster.outputs["dashboard_url"] == "http://198.51.100.7:8787/status"
    assert cluster.outputs["tls"] == tls  # absolute again, in this checkout
    assert load("lake", project).outputs["url"] == "s3://rh-cloud-lake/lake"
    assert operations.expected_workers(cluster, {"rh_iac:workers": 5}) == 3  # the declaration wins


def test_local_outputs_record_like_terraform(proj):
    from rh_iac.providers import pulumi_target

    project = Project(proj.root)
    stack = project.load_stack("local")
    folder = project.state_dir("local") / "folders" / "datasets"
    outputs = {"datasets": OutputValue({"url": folder.as_uri()}, False),
               "flights": OutputValue({"url": (folder / "flights").as_uri()}, False),
               "demo-token": OutputValue({"fingerprint": "abc"}, False)}
    records = {r["name"]: r for r in operations.pulumi_records(stack, outputs, pulumi_target("local"), proj.root)}
    assert records["datasets"]["outputs"] == {"url": "file://{project}/.rh_iac/local/folders/datasets"}
    assert records["demo-token"]["outputs"] == {"fingerprint": "abc"}
    # no output for the cluster: nothing of it was exported, so it is in the stack but has no address yet
    assert records["dev-cluster"]["outputs"] == {}


def test_expected_workers_from_config_when_undeclared(proj):
    project = Project(proj.root)
    proj.write_stack("cloud", 'from rh_iac import Cluster, Stack\n\nwith Stack("cloud", provider="aws"):\n'
                              '    Cluster("cc", allowed_cidrs=["203.0.113.0/24"])\n')
    cluster = project.load_stack("cloud")["cc"]
    assert operations.expected_workers(cluster, {"rh_iac:workers": 4}) == 4
    assert operations.expected_workers(cluster, {}) == cluster.workers


def test_deploy_waits_for_cloud_clusters_and_says_why_not(proj, tmp_path):
    """A cloud cluster whose scheduler never answers fails the wait within its timeout, naming the address."""
    import socket
    import time

    from rh_iac.errors import ClusterNotReadyError
    from rh_iac.tls import issue_cluster_tls

    project = Project(proj.root)
    proj.write_stack("cloud", 'from rh_iac import Cluster, Stack\n\nwith Stack("cloud", provider="aws"):\n'
                              '    Cluster("cc", workers=2, allowed_cidrs=["203.0.113.0/24"])\n')
    stack = project.load_stack("cloud")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status = tmp_path / "status"
    status.mkdir()
    tls = issue_cluster_tls(project.state_dir("cloud"), "cloud", "cc").to_dict()
    records = [{"name": "cc", "type": "cluster", "status": "deployed",
                "outputs": portable({"scheduler_address": f"tls://127.0.0.1:{port}", "tls": tls,
                                                 "status_url": status.as_uri()}, proj.root)}]
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(ClusterNotReadyError, match=rf"127\.0\.0\.1:{port}"):
        operations.wait_for_clusters(stack, records, proj.root, timeout=3, progress=lines.append)
    assert time.monotonic() - started < 30 and any("waiting for" in line for line in lines)  # never silent
    operations.wait_for_clusters(stack, [{**records[0], "status": "destroyed"}], proj.root, timeout=0.1)  # skipped


# --- the engine's events -> changes and drift ----------------------------------------------------------------------
def _event(kind: str, op: str, name: str, type_: str, old: dict | None, new: dict | None, parent: str = "",
           **meta) -> EngineEvent:
    urn = f"urn:pulumi:dev::rh_iac::{parent + '$' if parent else ''}{type_}::{name}"
    step = {"op": op, "urn": urn, "type": type_, "provider": "",
            "old": {"type": type_, "urn": urn, **old} if old is not None else None,
            "new": {"type": type_, "urn": urn, **new} if new is not None else None, **meta}
    return EngineEvent.from_json({"sequence": 1, "timestamp": 1, kind: {"metadata": step}})


def test_changes_from_events():
    cluster = "pulumi-python:dynamic/rh-local:DaskCluster"
    events = [
        _event("resourcePreEvent", "same", "dev", "pulumi:pulumi:Stack", {}, {}),
        _event("resourcePreEvent", "create", "default", "pulumi:providers:aws", None, {"inputs": {}}),
        _event("resourcePreEvent", "update", "dev-cluster", cluster,
               {"inputs": {"workers": 2}, "outputs": {"workers": 1, "__provider": "x"}},
               {"inputs": {"workers": 2, "worker_pids": engine.UNKNOWN}}, diffs=["workers"]),
        _event("resourcePreEvent", "create", "lake", "rh:aws:Bucket", None, {"inputs": {"name": "lake"}}),
        _event("resourcePreEvent", "replace", "old", "rh:aws:Bucket", {"inputs": {"name": "old"}},
               {"inputs": {"name": "old2"}}),
        _event("resourcePreEvent", "delete", "gone", "rh:aws:Secret", {"inputs": {"name": "gone"}}, None),
        _event("resourcePreEvent", "create-replacement", "old", "rh:aws:Bucket", None, {"inputs": {}}),
    ]
    child = _event("resourcePreEvent", "create", "lake", "aws:s3/bucket:Bucket", None, {"inputs": {}},
                   parent="rh:aws:Bucket")
    found = engine.changes_from_events([*events, child])
    children = [c for c in found if engine.is_child(c)]
    assert [(c.name, c.type) for c in children] == [("lake", "rh:aws:Bucket$aws:s3/bucket:Bucket")]
    changes = {c.name: c for c in found if not engine.is_child(c)}
    assert sorted(changes) == ["dev-cluster", "gone", "lake", "old"]
    assert changes["lake"].type == "rh:aws:Bucket"  # the component itself, named like the declared resource
    assert [changes[n].action for n in ("dev-cluster", "lake", "old", "gone")] == ["update", "create", "replace",
                                                                                  "delete"]
    diff = changes["dev-cluster"].changed_attributes()
    assert diff["workers"] == (1, 2) and diff["worker_pids"] == (None, "(known after apply)")
    assert "__provider" not in changes["dev-cluster"].before
    from rh_iac.engines.terraform import Plan

    assert Plan(Path("."), list(changes.values()), []).summary() == {"create": 1, "update": 1, "replace": 1,
                                                                     "delete": 1, "drift": 0}


def test_drift_from_refresh_events():
    cluster = "pulumi-python:dynamic/rh-local:DaskCluster"
    events = [
        _event("resOutputsEvent", "refresh", "dev-cluster", cluster, {"outputs": {"workers": 2}},
               {"outputs": {"workers": 1}}, diffs=["workers"]),
        _event("resOutputsEvent", "refresh", "datasets", "pulumi-python:dynamic/rh-local:Folder",
               {"outputs": {"url": "file:///d"}}, None),
        _event("resOutputsEvent", "refresh", "flights", "pulumi-python:dynamic/rh-local:Table",
               {"outputs": {"url": "file:///d/f"}}, {"outputs": {"url": "file:///d/f"}}),
        _event("resOutputsEvent", "create", "new", cluster, None, {"outputs": {"workers": 1}}),
    ]
    drift = {c.name: c for c in engine.drift_from_events(events)}
    assert sorted(drift) == ["datasets", "dev-cluster"]  # the unchanged table and the create are not drift
    assert drift["dev-cluster"].action == "update" and drift["dev-cluster"].changed_attributes()["workers"] == (2, 1)
    assert drift["datasets"].action == "delete"


def test_plain_outputs_drop_secrets():
    plain = engine.plain_outputs({"a": OutputValue({"url": "s3://x", "token": "[secret]"}, False),
                                  "b": OutputValue({"v": CANARY}, True)})
    assert plain == {"a": {"url": "s3://x"}}


# --- state and passphrase -------------------------------------------------------------------------------------------
def test_backend_and_passphrase_under_the_state_folder_never_in_git(proj):
    project = Project(proj.root)
    env = engine.engine_environment(project, "local", environ={"PYTHONPATH": "/extra"})
    backend = proj.root / ".rh_iac" / "local" / "pulumi"
    assert env["PULUMI_BACKEND_URL"] == backend.as_uri() and backend.is_dir()
    passphrase = Path(env["PULUMI_CONFIG_PASSPHRASE_FILE"])
    assert passphrase.parent == proj.root / ".rh_iac" / "local"
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600 and len(passphrase.read_text()) >= 32
    first = passphrase.read_text()
    again = engine.engine_environment(project, "local", environ={})
    assert Path(again["PULUMI_CONFIG_PASSPHRASE_FILE"]).read_text() == first  # generated once, then kept
    paths = env["PYTHONPATH"].split(os.pathsep)
    assert paths[0] == str(proj.root) and "/extra" in paths  # the dynamic providers' process finds rh_iac
    assert proj.git("status", "--porcelain", "--ignored=no") == ""
    assert len(proj.git("check-ignore", str(passphrase), str(backend)).splitlines()) == 2  # both ignored
    assert first not in proj.git("log", "-p", "--all")


def test_user_backend_and_passphrase_win(proj):
    project = Project(proj.root)
    env = engine.engine_environment(project, "local", environ={"PULUMI_BACKEND_URL": "s3://team-state",
                                                               "PULUMI_CONFIG_PASSPHRASE": "p"})
    assert "PULUMI_BACKEND_URL" not in env and "PULUMI_CONFIG_PASSPHRASE_FILE" not in env  # inherited as set
    assert not (proj.root / ".rh_iac" / "local" / engine.PASSPHRASE_FILE).exists()


def test_import_rh_iac_stays_free_of_pulumi(proj):
    run = proj.python("import sys, rh_iac, rh_iac.operations, rh_iac.providers; "
                      "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pulumi', 'pulumi_aws')))")
    assert run.stdout.strip() == "[]"


def test_pulumi_results_render_like_terraform_ones():
    import io

    from rich.console import Console

    from rh_iac import render
    from rh_iac.engines.terraform import Plan

    out = io.StringIO()
    console = Console(file=out, width=160)
    render.stream(console)("Updating (local):  [not markup]\n")
    cluster = "pulumi-python:dynamic/rh-local:DaskCluster"
    changes = engine.changes_from_events([
        _event("resourcePreEvent", "update", "dev-cluster", cluster, {"outputs": {"workers": 1}},
               {"inputs": {"workers": 2}}),
        _event("resourcePreEvent", "create", "lake", "rh:aws:Bucket", None, {"inputs": {"name": "lake"}})])
    drift = engine.drift_from_events([_event("resOutputsEvent", "refresh", "dev-cluster", cluster,
                                             {"outputs": {"workers": 2}}, {"outputs": {"workers": 1}})])
    render.deployed(console, operations.DeployResult("local", Plan(Path("."), changes, drift), True, "abc1234567890"))
    text = out.getvalue()
    assert "Updating (local):  [not markup]" in text  # the engine's own lines, verbatim
    assert "Drift" in text and "drifted" in text and "workers: 2 → 1" in text
    assert "update" in text and f"{cluster}::dev-cluster" in text and "rh:aws:Bucket::lake" in text
    assert "Plan: 1 to create, 1 to update, 0 to replace, 0 to delete" in text
    assert "RNS: committed abc1234567" in text
