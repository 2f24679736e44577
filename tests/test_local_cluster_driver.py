"""The local Dask cluster driver against real processes: TLS only, drift seen by read(), convergence by update(),
and nothing left running after delete() or a failed create().

Every process a test starts is recorded (by wrapping the driver's spawn) and killed by the fixture, even on failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rh_iac.errors import DeployError
from rh_iac.providers.local import dask_cluster as dc
from rh_iac.tls import ClusterTLS, issue_cluster_tls
from runtime.dask_node import scheduler_argv, worker_argv

pytestmark = pytest.mark.timeout(120)

SPEC = {"workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB", "autostop_mins": 30,
        "env_vars": {"RH_IAC_TEST_VAR": "hello"}}


class Harness:
    """Runs the driver in ``tmp_path`` and remembers every PID it spawned."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.spawned: list[int] = []

    def create(self, name: str, spec: dict, **kw) -> dict:
        return dc.create(name, spec, self.state_dir, "test", **kw)

    def update(self, name: str, current: dict, spec: dict) -> dict:
        return dc.update(name, current, spec, self.state_dir, "test")

    def read(self, name: str, state: dict) -> dict | None:
        return dc.read(name, state, self.state_dir)

    def resource_dir(self, name: str) -> Path:
        return self.state_dir / "resources" / name

    def alive(self) -> list[int]:
        """Spawned PIDs that are still running (zombies count as dead), or whose process group still runs."""
        return sorted(dc._live_groups(set(self.spawned)))


@pytest.fixture
def harness(tmp_path, monkeypatch):
    h = Harness(tmp_path / "state")
    real_spawn = dc._spawn

    def spawn(*args, **kwargs):
        pid = real_spawn(*args, **kwargs)
        h.spawned.append(pid)
        return pid

    monkeypatch.setattr(dc, "_spawn", spawn)
    try:
        yield h
    finally:
        names = [p.name for p in (h.state_dir / "resources").glob("*")] if (h.state_dir / "resources").exists() else []
        for name in names:
            record = dc._load(h.resource_dir(name)) or {}
            h.spawned += [w["pid"] for w in record.get("workers", [])]
            h.spawned += [record["scheduler"]["pid"]] if record.get("scheduler") else []
            try:
                dc.delete(name, {}, h.state_dir)
            except Exception:  # noqa: BLE001 - the kill below is the backstop
                pass
        for pgid in dc._live_groups(set(h.spawned)):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        dc._reap()


def _client(state: dict, **kw):
    from distributed import Client

    return Client(state["scheduler_address"], security=ClusterTLS.from_dict(state["tls"]).security("client"),
                  timeout=10, set_as_default=False, **kw)


def _worker_names(client) -> set[str]:
    return {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}


def _wait_dead(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL is delivered asynchronously: wait until /proc shows the process dead (or a zombie)."""
    deadline = time.monotonic() + timeout
    while dc._alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_argv_is_tls_only_and_bound_to_localhost(tmp_path):
    tls = ClusterTLS(*(str(tmp_path / f) for f in ("ca", "sc", "sk", "wc", "wk", "cc", "ck")))
    s = scheduler_argv("py", tls, "127.0.0.1", 0, "127.0.0.1:0", tmp_path / "s.json", 600)
    assert s[:3] == ["py", "-m", "distributed.cli.dask_scheduler"]
    assert s[s.index("--protocol") + 1] == "tls" and s[s.index("--host") + 1] == "127.0.0.1"
    assert s[s.index("--idle-timeout") + 1] == "600s" and s[s.index("--tls-cert") + 1] == tls.scheduler_cert
    assert "--idle-timeout" not in scheduler_argv("py", tls, "127.0.0.1", 0, "127.0.0.1:0", tmp_path / "s", None)
    w = worker_argv("py", tls, "tls://127.0.0.1:1", "127.0.0.1", 2, "1GiB", "w-0", 60, tmp_path)
    assert w[3] == "tls://127.0.0.1:1" and "--no-dashboard" in w and w[w.index("--nworkers") + 1] == "1"
    assert w[w.index("--death-timeout") + 1] == "60" and w[w.index("--tls-key") + 1] == tls.worker_key


def test_lifecycle_tls_drift_convergence_and_delete(harness):
    t0 = time.monotonic()
    state = harness.create("dev", SPEC)
    assert time.monotonic() - t0 < 20
    assert state["workers"] == 2 and len(state["worker_pids"]) == 2
    assert state["scheduler_address"].startswith("tls://127.0.0.1:")
    assert state["dashboard_url"].startswith("http://127.0.0.1:") and state["dashboard_url"].endswith("/status")
    rdir = harness.resource_dir("dev")
    assert json.loads((rdir / "processes.json").read_text())["scheduler"]["pid"] == state["scheduler_pid"]

    # private material: keys and logs 0600, directories 0700
    for key in ("scheduler_key", "worker_key", "client_key"):
        assert stat.S_IMODE(os.stat(state["tls"][key]).st_mode) == 0o600
    for log in (rdir / "logs").iterdir():
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(rdir.stat().st_mode) == 0o700

    # a real task over mutual TLS; workers got the spec's env vars
    with _client(state) as client:
        assert client.submit(lambda x: x + 1, 41).result(timeout=10) == 42
        assert set(client.run(os.getenv, "RH_IAC_TEST_VAR").values()) == {"hello"}

    # refused: plain TCP, a certificate from another stack's CA, and TLS without any client certificate
    from distributed import Client

    port = int(state["scheduler_address"].rsplit(":", 1)[1])
    with pytest.raises((OSError, TimeoutError)):
        Client(f"tcp://127.0.0.1:{port}", timeout=2, set_as_default=False)
    foreign = issue_cluster_tls(harness.state_dir.parent / "other", "other", "dev")
    with pytest.raises((OSError, TimeoutError)):
        Client(state["scheduler_address"], security=foreign.security("client"), timeout=2, set_as_default=False)
    ctx = ssl.create_default_context(cafile=state["tls"]["ca_file"])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
                conn.sendall(b"x")
                conn.recv(1)  # TLS 1.3 reports the server's certificate_required alert on the first read

    # drift: a killed nanny is seen by read(), update() restores the count
    t0 = time.monotonic()
    assert harness.read("dev", state) == state
    read_s = time.monotonic() - t0
    assert read_s < 0.5
    victim = state["worker_pids"][0]
    os.killpg(victim, signal.SIGKILL)
    _wait_dead(victim)
    drifted = harness.read("dev", state)
    assert drifted is not None and drifted["workers"] == 1 and victim not in drifted["worker_pids"]
    state = harness.update("dev", drifted, SPEC)
    assert state["workers"] == 2 and victim not in state["worker_pids"]
    assert state["scheduler_address"] == drifted["scheduler_address"]  # the scheduler stayed
    with _client(state) as client:
        assert len(_worker_names(client)) == 2
        assert sum(client.gather(client.map(lambda x: x * 2, range(10)))) == 90
    health = dc.health("dev", state, harness.state_dir)
    assert health == {"scheduler": "up", "workers_alive": 2, "workers_expected": 2, "adaptive": None,
                      "address": state["scheduler_address"], "dashboard_url": state["dashboard_url"]}

    # scale down, then a new threads_per_worker restarts every worker
    state = harness.update("dev", state, {**SPEC, "workers": 1})
    assert state["workers"] == 1
    old_workers = set(state["worker_pids"])
    state = harness.update("dev", state, {**SPEC, "threads_per_worker": 2})
    assert state["workers"] == 2 and not old_workers & set(state["worker_pids"])
    with _client(state) as client:
        assert set(client.nthreads().values()) == {2}

    # a dead scheduler: read() says gone, update() re-creates, nothing of the old cluster survives
    old_pids = [state["scheduler_pid"], *state["worker_pids"]]
    os.killpg(state["scheduler_pid"], signal.SIGKILL)
    _wait_dead(state["scheduler_pid"])
    assert harness.read("dev", state) is None
    assert dc.health("dev", state)["scheduler"] == "down"
    state = harness.update("dev", state, SPEC)
    assert not dc._live_groups(set(old_pids))
    with _client(state) as client:
        assert client.submit(sum, [1, 2, 3]).result(timeout=10) == 6
        assert len(_worker_names(client)) == 2

    # delete: every process gone (per /proc), ports closed, resource dir removed; and again is a no-op
    t0 = time.monotonic()
    dc.delete("dev", state, harness.state_dir)
    delete_s = time.monotonic() - t0
    assert harness.alive() == []
    for pid in harness.spawned:
        assert not dc._alive(pid)
    for url in (state["scheduler_address"], state["dashboard_url"].removesuffix("/status")):
        assert not dc._port_open(*dc._host_port(url))
    assert not rdir.exists()
    dc.delete("dev", state, harness.state_dir)
    print(f"read {read_s * 1000:.1f} ms, delete {delete_s:.2f} s")


def test_failed_create_raises_with_log_tail_and_leaves_nothing(harness):
    with pytest.raises(DeployError) as err:
        harness.create("bad", {**SPEC, "memory_limit": "not-a-size"}, timeout=30)
    message = str(err.value)
    assert "'bad'" in message and "worker" in message and "Could not interpret" in message  # the log tail
    assert harness.spawned and harness.alive() == []


def test_read_rejects_reused_pid_and_missing_state(harness):
    state = {"scheduler_address": "tls://127.0.0.1:1", "scheduler_pid": os.getpid(), "worker_pids": [os.getpid()],
             "workers": 1, "tls": {"scheduler_cert": "/nowhere/scheduler.pem", "worker_cert": "/nowhere/w.pem"}}
    assert harness.read("ghost", state) is None  # this pytest process is not a scheduler of ours
    assert harness.read("ghost", {}) is None
    assert dc.health("ghost", state)["workers_alive"] == 0
    dc.delete("ghost", state, harness.state_dir)  # nothing to stop, and our own PID is left alone
    assert dc._alive(os.getpid())


def test_scheduler_that_cannot_start_raises_with_its_log(harness):
    from rh_iac.tls import issue_cluster_tls as issue

    key = Path(issue(harness.state_dir, "test", "broken").scheduler_key)
    key.write_text("not a key")  # the certificate is still fresh, so create() reuses this broken key
    with pytest.raises(DeployError) as err:
        harness.create("broken", {**SPEC, "workers": 1})
    assert "'broken'" in str(err.value) and "scheduler" in str(err.value) and "scheduler.log" in str(err.value)
    assert harness.spawned and harness.alive() == []


def test_lost_state_leftovers_are_stopped(harness):
    first = harness.create("lost", {**SPEC, "workers": 1})
    second = harness.create("lost", {**SPEC, "workers": 1})  # e.g. Terraform re-creating after its state was lost
    assert not dc._live_groups({first["scheduler_pid"], *first["worker_pids"]})
    assert harness.read("lost", second) is not None
    dc.delete("lost", {}, harness.state_dir)  # no state at all: processes.json is enough
    assert harness.alive() == [] and not harness.resource_dir("lost").exists()


def test_import_is_cheap():
    code = ("import sys, rh_iac.providers.local.dask_cluster, runtime.dask_node; "
            "sys.exit(any(m in sys.modules for m in ('dask', 'distributed')))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
