"""Node agents booting a real TLS Dask cluster against moto's S3 + Secrets Manager, and the deploy's wait for it.

Each agent runs as a local process from the exact files its user-data writes; every process is stopped by its process
group in a ``finally``. wait_ready() reads the status prefix through s3fs, as a deploy does.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from rh_iac.errors import ClusterNotReadyError
from runtime.readiness import wait_ready
from conftest import CANARY
from moto_server import moto_s3, s3_env  # noqa: F401 - fixtures
from runtime.bootstrap import NodeConfig
from node_helpers import CANARY_VAR, FakeAwsCloud, FakeGcp, free_port, running_agent, user_data
from project_helpers import wait_for


@pytest.fixture
def cloud(s3_env, tmp_path) -> FakeAwsCloud:
    return FakeAwsCloud.create(s3_env, tmp_path)


def test_agents_boot_a_tls_cluster_that_wait_ready_reports_and_a_client_uses(cloud, tmp_path):
    from distributed import Client

    from rh_iac.versions import local_versions

    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    sched = cloud.node_config("scheduler", tmp_path, scheduler_port=port)
    worker = cloud.node_config("worker", tmp_path, scheduler_address=address)
    lines: list[str] = []
    with running_agent(sched, cloud.env, tmp_path) as sp, running_agent(worker, cloud.env, tmp_path) as wp:
        marker = wait_ready(address, cloud.tls.to_dict(), cloud.status_url("c1"), timeout=60, workers=1,
                            label="Cluster 'c1'", progress=lines.append)
        assert marker["role"] == "scheduler" and marker["address"] == address
        assert marker["versions"] == local_versions()
        assert lines and "ready" in lines[-1]
        with Client(address, security=cloud.tls.security("client"), timeout=10) as client:
            assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
            # the canary secret reached the worker's environment, and only through the secret store
            getenv = lambda name: os.environ.get(name)  # noqa: E731 - pickled by value, read on the worker
            assert client.submit(getenv, CANARY_VAR, pure=False).result(timeout=30) == CANARY
            assert client.submit(getenv, "RH_IAC_STAGE", pure=False).result(timeout=30) == "test"
        wait_for(lambda: "worker-worker.ready.json" in cloud.objects(), 30, "the worker's readiness marker")
        objects = cloud.objects()
        assert {"scheduler-scheduler.ready.json", "scheduler-scheduler.log", "worker-worker.log"} <= set(objects)
        assert json.loads(objects["worker-worker.ready.json"])["worker_name"] == "c1-worker"
        local = json.loads(Path(sched.state_dir, "ready.json").read_text())
        assert local["address"] == address
        key = Path(worker.state_dir, "secrets", "key.pem")
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
        assert sp.poll() is None and wp.poll() is None

    # stopped nodes take their readiness markers away, so a later wait cannot trust a dead node
    objects = cloud.objects()
    assert not [name for name in objects if name.endswith(".ready.json")]
    for config in (sched, worker):
        written = [user_data(config), *objects.values(), Path(config.log_file).read_bytes(),
                   Path(config.state_dir, "ready.json").read_bytes() if Path(config.state_dir, "ready.json").exists()
                   else b"", (tmp_path / config.node_name / "opt" / "node.json").read_bytes()]
        for blob in written:
            assert CANARY not in (blob.decode() if isinstance(blob, bytes) else blob)
        assert "-----BEGIN" not in user_data(config)


def test_worker_exits_within_its_death_timeout_and_wait_ready_says_the_port_is_unreachable(cloud, tmp_path):
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    sched = cloud.node_config("scheduler", tmp_path, scheduler_port=port)
    worker = cloud.node_config("worker", tmp_path, scheduler_address=address, death_timeout_s=5)
    with running_agent(worker, cloud.env, tmp_path) as wp:
        with running_agent(sched, cloud.env, tmp_path) as sp:
            wait_ready(address, cloud.tls.to_dict(), cloud.status_url("c1"), timeout=60, workers=1)
            wait_for(lambda: "worker-worker.ready.json" in cloud.objects(), 30, "the worker's readiness marker")
            assert wp.poll() is None
        assert sp.poll() is not None
        killed = time.monotonic()
        code = wp.wait(timeout=5 + 30)  # the death timeout, plus the nanny's own shutdown
        assert time.monotonic() - killed < 35
        assert code is not None
        log = cloud.objects()["worker-worker.log"].decode()
        assert "the dask worker exited" in log

    started = time.monotonic()
    with pytest.raises(ClusterNotReadyError) as info:
        wait_ready(address, cloud.tls.to_dict(), cloud.status_url("c1"), timeout=4, workers=1, label="Cluster 'c1'")
    assert time.monotonic() - started < 4 + 3
    message = str(info.value)
    assert address in message and "port unreachable" in message and "allowed CIDRs" in message
    assert "--- tail of s3://rh-test-bucket/.rh_iac/c1/worker-worker.log ---" in message
    assert "the dask worker exited" in message


def test_a_scheduler_port_that_never_opens_times_out_with_the_nodes_log_tail(cloud, tmp_path):
    address = f"tls://127.0.0.1:{free_port()}"  # nothing will ever listen here
    worker = cloud.node_config("worker", tmp_path, scheduler_address=address, death_timeout_s=3)
    with running_agent(worker, cloud.env, tmp_path) as wp:
        assert wp.wait(timeout=40) == 1  # the worker gave up on its scheduler: a failed boot
    objects = cloud.objects()
    assert "worker-worker.failed.json" in objects and "worker-worker.log" in objects

    started = time.monotonic()
    with pytest.raises(ClusterNotReadyError) as info:
        wait_ready(address, cloud.tls.to_dict(), cloud.status_url("c1"), timeout=3, label="Cluster 'c1'")
    assert time.monotonic() - started < 3 + 3
    message = str(info.value)
    assert "Cluster 'c1' is not ready after 3 s" in message and address in message and "port unreachable" in message
    assert "worker worker reported a failed boot: the dask worker exited" in message
    assert "--- tail of s3://rh-test-bucket/.rh_iac/c1/worker-worker.log ---" in message
    assert CANARY not in message and CANARY not in objects["worker-worker.log"].decode()


def test_missing_workers_tls_of_another_ca_and_a_missing_marker_are_named(cloud, tmp_path):
    from rh_iac.tls import issue_cluster_tls

    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    sched = cloud.node_config("scheduler", tmp_path, scheduler_port=port)
    with running_agent(sched, cloud.env, tmp_path):
        wait_ready(address, cloud.tls.to_dict(), cloud.status_url("c1"), timeout=60)
        with pytest.raises(ClusterNotReadyError, match=r"0 of 2 workers have joined"):
            wait_ready(address, cloud.tls.to_dict(), cloud.status_url("c1"), timeout=3, workers=2)
        other = issue_cluster_tls(tmp_path / "other-stack", "other", "c1")
        with pytest.raises(ClusterNotReadyError, match=r"TLS refused(.|\n)*another CA"):
            wait_ready(address, other.to_dict(), cloud.status_url("c1"), timeout=4)
        with pytest.raises(ClusterNotReadyError, match=r"marker missing(.|\n)*write access"):
            wait_ready(address, cloud.tls.to_dict(), cloud.status_url("elsewhere"), timeout=3)


def test_a_bad_scheduler_address_is_refused_before_waiting(cloud):
    with pytest.raises(ClusterNotReadyError, match="not tls://<host>:<port>"):
        wait_ready("tcp://127.0.0.1:8786", cloud.tls.to_dict(), cloud.status_url("c1"), timeout=1)


def test_an_idle_scheduler_stops_takes_its_marker_away_and_powers_the_node_off(cloud, tmp_path):
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    flag = tmp_path / "powered-off"
    poweroff = (sys.executable, "-c", f"open({str(flag)!r}, 'w').write('off')")
    sched = cloud.node_config("scheduler", tmp_path, scheduler_port=port, idle_timeout_s=8, poweroff_on_exit=True,
                              poweroff_command=poweroff)
    with running_agent(sched, cloud.env, tmp_path) as sp:
        wait_ready(address, cloud.tls.to_dict(), cloud.status_url("c1"), timeout=60)
        assert not flag.exists()
        assert sp.wait(timeout=40) == 0  # idle: the scheduler stopped itself, the agent followed
        assert flag.read_text() == "off"
    objects = cloud.objects()
    assert "scheduler-scheduler.ready.json" not in objects
    assert "the dask scheduler exited with code 0" in objects["scheduler-scheduler.log"].decode()
    assert not Path(sched.state_dir, "ready.json").exists()


def test_gcp_agents_use_the_metadata_token_secret_manager_and_gcs_api(tmp_path):
    from distributed import Client

    from rh_iac.tls import issue_cluster_tls

    tls = issue_cluster_tls(tmp_path / "stack", "gcp-dev", "c1")
    secrets = {"projects/p/secrets/c1-tls-ca": Path(tls.ca_file).read_text(),
               "projects/p/secrets/demo-token": CANARY}
    refs = {}
    for role in ("scheduler", "worker"):
        for part in ("cert", "key"):
            secrets[f"projects/p/secrets/c1-tls-{role}-{part}"] = Path(getattr(tls, f"{role}_{part}")).read_text()
        refs[role] = {"tls_ca": "projects/p/secrets/c1-tls-ca", "tls_cert": f"projects/p/secrets/c1-tls-{role}-cert",
                      "tls_key": f"projects/p/secrets/c1-tls-{role}-key"}
    refs["worker"][f"secret:{CANARY_VAR}"] = "projects/p/secrets/demo-token"
    port = free_port()
    address = f"tls://127.0.0.1:{port}"

    def config(role: str, name: str, **overrides) -> NodeConfig:
        values = dict(cloud="gcp", role=role, stack="gcp-dev", cluster="c1", region="europe-west1",
                      secret_refs=refs[role], status_url="gs://gcp-bucket/.rh_iac/c1/", host="127.0.0.1",
                      scheduler_port=port, dashboard_port=0, node_name=name, poweroff_on_exit=False,
                      scheduler_address=address if role == "worker" else None,
                      state_dir=str(tmp_path / name / "state"), log_file=str(tmp_path / name / "bootstrap.log"))
        return NodeConfig(**{**values, **overrides})

    with FakeGcp(secrets) as gcp:
        with running_agent(config("scheduler", "s"), gcp.env, tmp_path) as sp, \
                running_agent(config("worker", "w"), gcp.env, tmp_path) as wp:
            wait_for(lambda: {"gcp-bucket/.rh_iac/c1/scheduler-s.ready.json",
                              "gcp-bucket/.rh_iac/c1/worker-w.ready.json"} <= set(gcp.objects), 60, "both markers")
            with Client(address, security=tls.security("client"), timeout=10) as client:
                getenv = lambda name: os.environ.get(name)  # noqa: E731
                assert client.submit(getenv, CANARY_VAR, pure=False).result(timeout=30) == CANARY
            marker = json.loads(gcp.objects["gcp-bucket/.rh_iac/c1/scheduler-s.ready.json"])
            assert marker["address"] == address and sp.poll() is None and wp.poll() is None
        assert not [k for k in gcp.objects if k.endswith(".ready.json")]  # removed when the nodes stopped

        broken = {**refs["worker"], "secret:OTHER": "projects/p/secrets/never-created"}
        with running_agent(config("worker", "w2", secret_refs=broken), gcp.env, tmp_path) as bad:
            assert bad.wait(timeout=30) == 1
        failure = json.loads(gcp.objects["gcp-bucket/.rh_iac/c1/worker-w2.failed.json"])
        assert "projects/p/secrets/never-created" in failure["error"] and "404" in failure["error"]
        for key, blob in gcp.objects.items():
            assert CANARY not in blob.decode(), key


def test_an_unreachable_status_store_neither_stretches_the_timeout_nor_hides_the_reason(cloud, tmp_path):
    address = f"tls://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ClusterNotReadyError) as info:  # botocore retries a refused endpoint for many seconds
        wait_ready(address, cloud.tls.to_dict(), cloud.status_url("c1"), timeout=3,
                   storage_options={"endpoint_url": f"http://127.0.0.1:{free_port()}"})
    assert time.monotonic() - started < 3 + 3
    message = str(info.value)
    assert "port unreachable" in message
    assert "did not answer while waiting" in message or "cannot be read from here" in message

    missing = {**cloud.tls.to_dict(), "client_key": str(tmp_path / "gone.pem")}
    with pytest.raises(ClusterNotReadyError, match=r"TLS file .*gone.pem is missing"):
        wait_ready(address, missing, cloud.status_url("c1"), timeout=3)
