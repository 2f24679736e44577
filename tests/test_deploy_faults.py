"""Deploys that fail, are interrupted or collide: state stays consistent, the next deploy converges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import rh_iac
from rh_iac.errors import DeployError
from rh_iac.locks import stack_lock
from rh_iac.project import Project

from conftest import pid_alive, recorded_pids

pytestmark = pytest.mark.timeout(600)

SMALL = """
from rh_iac import Cluster, Env, Folder, Stack, Table
with Stack("small", provider="local"):
    Cluster("small-cluster", workers={workers}, env={env})
    data = Folder("data")
    Table("t", folder=data)
"""
#: an Env whose setup command fails: the cluster's create fails midway through the apply
BROKEN_ENV = 'Env("broken", setup=["echo setting up; exit 3"])'


def _small(workers: int = 1, env: str = "None") -> str:
    return SMALL.format(workers=workers, env=env)


def _state_names(proj, stack="small") -> set[str]:
    path = proj.root / f".rh_iac/{stack}/terraform/terraform.tfstate"
    if not path.exists():
        return set()
    return {r["name"] for r in json.loads(path.read_text()).get("resources", [])}


def test_failed_apply_keeps_state_consistent_and_the_next_deploy_converges(project, monkeypatch):
    monkeypatch.setenv("RH_IAC_HOME", str(project.home))
    p = Project(project.root)
    project.write_stack("small", _small(env=BROKEN_ENV))
    with pytest.raises(DeployError, match=r"(?s)Env .broken.*exit 3"):
        rh_iac.deploy("small", project=p)
    # what did succeed is recorded by Terraform; the failed cluster left nothing running
    assert _state_names(project) == {"data", "t"}
    assert not [pid for pid in recorded_pids(project.root) if pid_alive(pid)]
    assert not (project.root / "rns").exists()  # nothing recorded for a deploy that failed

    project.write_stack("small", _small())
    result = rh_iac.deploy("small", project=p)
    assert [c.name for c in result.plan.changes] == ["small-cluster"]  # the rest is already there
    assert _state_names(project) == {"data", "t", "small-cluster"}
    record = json.loads((project.root / "rns/small-cluster.json").read_text())
    assert record["status"] == "deployed" and record["outputs"]["scheduler_address"].startswith("tls://")
    rh_iac.destroy("small", project=p)
    assert not [pid for pid in recorded_pids(project.root) if pid_alive(pid)]


def test_a_concurrent_deploy_is_locked_out(project):
    project.write_stack("small", _small())
    state_dir = Project(project.root).state_dir("small")
    with stack_lock(state_dir, "small", "deploy"):
        proc = project.invoke("deploy", "--stack", "small", check=False)
    assert proc.returncode != 0
    assert "StackLockedError" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
    assert _state_names(project) == set()

    # two real deploys started together: one runs, the other is refused at once
    first = subprocess.Popen([sys.executable, "-m", "invoke", "deploy", "--stack", "small"], cwd=project.root,
                             env=project.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while "pid" not in (state_dir / "lock").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = project.invoke("deploy", "--stack", "small", check=False)
        assert second.returncode != 0 and "is locked by pid" in second.stderr
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
    assert _state_names(project) == {"data", "t", "small-cluster"}
    project.invoke("destroy", "--stack", "small")


def test_an_interrupted_deploy_converges_and_leaves_no_orphans(project):
    project.write_stack("small", _small(workers=2))
    deploy = subprocess.Popen([sys.executable, "-m", "invoke", "deploy", "--stack", "small"], cwd=project.root,
                              env=project.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        # kill the whole deploy (invoke, terraform, the provider plugin) once the cluster's processes are starting
        deadline = time.monotonic() + 120
        while not recorded_pids(project.root) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert recorded_pids(project.root), "the deploy never started the cluster"
    finally:
        os.killpg(deploy.pid, signal.SIGKILL)
        deploy.wait()
    orphans = recorded_pids(project.root)

    project.invoke("deploy", "--stack", "small")
    status = project.invoke("status", "--stack", "small").stdout
    assert "2/2 workers" in status and "healthy" in status
    state = json.loads((project.root / ".rh_iac/small/terraform/terraform.tfstate").read_text())
    cluster = next(r for r in state["resources"] if r["name"] == "small-cluster")["instances"][0]["attributes"]
    live = {cluster["scheduler_pid"], *cluster["worker_pids"]}
    time.sleep(2)  # give PID 1 time to reap anything that was stopped
    assert not [pid for pid in orphans if pid not in live and pid_alive(pid)], "orphans of the killed deploy remain"
    assert "No changes" in project.invoke("deploy", "--stack", "small").stdout
    project.invoke("destroy", "--stack", "small")


def test_rns_commit_never_takes_the_users_other_changes(project):
    project.write_stack("small", _small())
    (project.root / "notes.txt").write_text("staged work\n")
    project.git("add", "notes.txt")
    (project.root / "tasks.py").write_text((project.root / "tasks.py").read_text() + "\n# unstaged edit\n")
    project.invoke("deploy", "--stack", "small")
    committed = project.git("show", "--name-only", "--format=", "HEAD").split()
    assert committed and all(path.startswith("rns/") for path in committed)
    assert project.git("diff", "--cached", "--name-only").split() == ["notes.txt"]
    assert "tasks.py" in project.git("diff", "--name-only")

    # a resource removed from the stack file is destroyed, and RNS records that
    project.write_stack("small", _small().replace('    Table("t", folder=data)\n', ""))
    project.invoke("deploy", "--stack", "small")
    assert json.loads((project.root / "rns/t.json").read_text())["status"] == "destroyed"
    assert "t" not in _state_names(project)
    project.invoke("destroy", "--stack", "small")


def test_preflight_refuses_before_anything_is_deployed(project, monkeypatch):
    monkeypatch.setenv("RH_IAC_HOME", str(project.home))
    monkeypatch.delenv("RH_IAC_NO_SUCH_TOKEN", raising=False)
    p = Project(project.root)
    # a resource on another provider than its stack's
    project.write_stack("mixed", "from rh_iac import Cluster, Stack\nwith Stack('mixed'):\n"
                                 "    Cluster('mixed-c', provider='aws')\n")
    with pytest.raises(rh_iac.EngineNotAvailableError, match="Cluster 'mixed-c'.*provider 'aws'"):
        rh_iac.deploy("mixed", project=p)
    # a secret with no value source in this environment
    project.write_stack("nosecret", "from rh_iac import Secret, Stack\nwith Stack('nosecret'):\n"
                                    "    Secret('api-key', from_env='RH_IAC_NO_SUCH_TOKEN')\n")
    with pytest.raises(rh_iac.SecretError, match="Secret 'api-key'.*RH_IAC_NO_SUCH_TOKEN"):
        rh_iac.deploy("nosecret", project=p)
    for stack in ("mixed", "nosecret"):
        assert _state_names(project, stack) == set()
    assert not (project.root / "rns").exists()


def test_a_name_deployed_by_one_stack_is_refused_to_another(project):
    project.write_stack("first", "from rh_iac import Folder, Stack\nwith Stack('first'):\n    Folder('shared')\n")
    project.write_stack("second", "from rh_iac import Folder, Stack\nwith Stack('second'):\n    Folder('shared')\n")
    project.invoke("deploy", "--stack", "first")
    proc = project.invoke("deploy", "--stack", "second", check=False)
    assert proc.returncode == 1 and "NameTakenError" in proc.stderr and "stack 'first'" in proc.stderr
    assert "Traceback" not in proc.stderr  # a user error is a message, not a stack dump
    assert _state_names(project, "second") == set()
    # destroying the other stack never marks the first stack's record destroyed
    project.invoke("destroy", "--stack", "second")
    assert json.loads((project.root / "rns/shared.json").read_text())["status"] == "deployed"
    project.invoke("destroy", "--stack", "first")
    assert json.loads((project.root / "rns/shared.json").read_text())["status"] == "destroyed"


def test_destroy_keeps_data_the_stack_did_not_create(project, tmp_path):
    user_data = tmp_path / "userdata"
    (user_data / "results").mkdir(parents=True)
    (user_data / "results" / "important.csv").write_text("keep me\n")
    project.write_stack("adopt", (
        "from rh_iac import Folder, Stack, Table\n"
        "with Stack('adopt'):\n"
        f"    f = Folder('my-data', path={str(user_data)!r})\n"
        "    Table('results', folder=f)\n"
        "    Table('fresh', folder=f)\n"
    ))
    project.invoke("deploy", "--stack", "adopt")
    (user_data / "fresh").mkdir()
    (user_data / "fresh" / "part-0.parquet").write_text("made by the stack's table\n")
    project.invoke("destroy", "--stack", "adopt")
    assert (user_data / "results" / "important.csv").read_text() == "keep me\n"
    assert not (user_data / "fresh").exists()  # the table the stack created goes with it
    assert user_data.is_dir()  # and so does nothing it adopted


def test_no_git_repository_fails_before_deploying(tmp_path, monkeypatch):
    root = tmp_path / "nogit"
    (root / "stacks").mkdir(parents=True)
    (root / "stacks" / "tiny.py").write_text("from rh_iac import Folder, Stack\nwith Stack('tiny'):\n    Folder('f')\n")
    monkeypatch.setenv("RH_IAC_HOME", str(tmp_path / "home"))
    with pytest.raises(rh_iac.RNSError, match="git init"):
        rh_iac.deploy("tiny", project=Project(root))
    assert _state_names(type("P", (), {"root": root})(), "tiny") == set()


def test_folders_on_existing_remote_storage_are_named_not_provisioned(project):
    project.write_stack("remote", (
        "from rh_iac import Blob, Folder, Stack, Table\n"
        "with Stack('remote'):\n"
        "    lake = Folder('lake', path='s3://rh-iac-test-bucket/data')\n"
        "    Table('events', folder=lake)\n"
        "    Blob('model', folder=lake)\n"
    ))
    project.invoke("deploy", "--stack", "remote")
    assert _state_names(project, "remote") == set()  # nothing to create on this machine
    for name in ("lake", "events", "model"):
        assert json.loads((project.root / f"rns/{name}.json").read_text())["status"] == "deployed"
    out = project.python("import rh_iac\nprint(rh_iac.load('events').url, rh_iac.load('model').url)").stdout.split()
    assert out == ["s3://rh-iac-test-bucket/data/events", "s3://rh-iac-test-bucket/data/model"]
    assert project.invoke("status", "--stack", "remote").stdout.count("declared") == 3
