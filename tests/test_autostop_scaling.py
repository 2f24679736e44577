"""Idle clusters stop themselves and come back on deploy; adaptive clusters follow the load within their bounds."""

from __future__ import annotations

import json
import time

import pytest

from rh_iac.errors import InvalidSpecError
from rh_iac.model import Cluster
from rh_iac.providers.local import dask_cluster
from rh_iac.tls import ClusterTLS

from conftest import kill_recorded, pid_alive
from project_helpers import wait_for

pytestmark = pytest.mark.timeout(300)

SPEC = {"workers": 1, "threads_per_worker": 1, "memory_limit": "auto", "autostop_mins": -1, "env_vars": {}}


def _sweep_all(state_dir, tls):
    return [pid for pid, _, _ in dask_cluster._swept(tls)]


@pytest.fixture
def state_dir(tmp_path):
    path = tmp_path / "project" / ".rh_iac" / "t"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        kill_recorded(tmp_path / "project")


def test_adaptive_bounds_are_validated():
    with pytest.raises(InvalidSpecError, match="either workers=N"):
        Cluster("c", workers=2, max_workers=4)
    with pytest.raises(InvalidSpecError, match="above max_workers"):
        Cluster("c", min_workers=3, max_workers=2)
    with pytest.raises(InvalidSpecError, match="needs max_workers"):
        Cluster("c", min_workers=1)
    c = Cluster("c", min_workers=1, max_workers=3)
    assert c.adaptive and c.workers == 1 and c.spec()["max_workers"] == 3
    assert Cluster("d", autostop_mins=0.5).autostop_mins == 0.5


def test_an_idle_cluster_stops_itself(state_dir):
    state = dask_cluster.create("idle", {**SPEC, "autostop_mins": 0.05}, state_dir, "t")  # 3 s of idleness
    pids = [state["scheduler_pid"], *state["worker_pids"]]
    wait_for(lambda: dask_cluster.read("idle", state, state_dir) is None, 60, "the idle scheduler to stop")
    assert dask_cluster.health("idle", state, state_dir)["scheduler"] == "down"
    wait_for(lambda: not any(pid_alive(p) for p in pids), 60, "the workers to follow their scheduler")
    again = dask_cluster.update("idle", state, {**SPEC, "autostop_mins": 0.05}, state_dir, "t")
    assert dask_cluster.read("idle", again, state_dir) is not None
    # it comes back where it was: clients and RNS keep the same address
    assert (again["scheduler_address"], again["dashboard_url"]) == (state["scheduler_address"], state["dashboard_url"])
    dask_cluster.delete("idle", again, state_dir)


def test_adaptive_cluster_scales_up_under_load_and_back_down(state_dir):
    from distributed import Client

    spec = {**SPEC, "min_workers": 1, "max_workers": 3}
    state = dask_cluster.create("elastic", spec, state_dir, "t")
    tls = ClusterTLS.from_dict(state["tls"])
    try:
        with Client(state["scheduler_address"], security=tls.security("client"), timeout=10) as client:
            assert len(client.scheduler_info()["workers"]) == 1
            futures = client.map(time.sleep, [1.0] * 40, pure=False)
            wait_for(lambda: len(client.scheduler_info()["workers"]) == 3, 60, "the scaler to add workers")
            client.gather(futures)
            del futures
            wait_for(lambda: len(client.scheduler_info()["workers"]) == 1, 90, "the scaler to retire idle workers")
        # Terraform sees the declared floor while the scheduler is up: no drift from scaling
        assert dask_cluster.read("elastic", state, state_dir)["workers"] == 1
        assert dask_cluster.health("elastic", state, state_dir)["adaptive"] == (1, 3)
        record = json.loads((state_dir / "resources/elastic/processes.json").read_text())
        assert record["spec"]["max_workers"] == 3
    finally:
        dask_cluster.delete("elastic", state, state_dir)
    time.sleep(1.5)
    assert not _sweep_all(state_dir, state["tls"]), "workers started by the scaler survived delete"
    assert not pid_alive(state["scheduler_pid"])


def test_autostopped_stack_shows_stopped_and_deploy_brings_it_back(project):
    project.write_stack("nap", (
        "from rh_iac import Cluster, Stack\n"
        "with Stack('nap', provider='local'):\n"
        "    Cluster('nap-cluster', workers=1, autostop_mins=0.2)  # 12 s\n"
    ))
    project.invoke("deploy", "--stack", "nap")
    wait_for(lambda: "stopped" in project.invoke("status", "--stack", "nap").stdout, 60, "status to say stopped")
    assert "create" in project.invoke("preview", "--stack", "nap").stdout
    commits = project.commits()
    project.invoke("deploy", "--stack", "nap")
    assert "healthy" in project.invoke("status", "--stack", "nap").stdout
    assert project.commits() == commits  # same address as before: nothing new for RNS
    project.invoke("destroy", "--stack", "nap")
