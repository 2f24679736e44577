"""rh_iac.compute against a real mutual-TLS Dask cluster of local processes."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
import traceback

import pytest

from rh_iac import compute
from rh_iac.errors import ClusterUnreachableError, ComputeError, ResourceNotDeployedError
from rh_iac.model import Cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- connect -------------------------------------------------------------------------------------------------------
def test_connect_uses_tls_and_is_cached(cluster):
    client = compute.connect(cluster)
    assert client.status == "running"
    assert client.scheduler.address.startswith("tls://")
    assert compute.connect(cluster) is client
    f = compute.function(abs)
    assert f.to(cluster).client is client and f.to(cluster).client is client
    assert len(client.nthreads()) == 2


def test_connect_replaces_a_closed_client(cluster):
    first = compute.connect(cluster)
    compute.disconnect(cluster)
    assert first.status == "closed"
    second = compute.connect(cluster)
    assert second is not first and second.status == "running"
    assert compute.function(lambda: 41 + 1).to(cluster)() == 42


def test_connect_unreachable_names_cluster_and_address(tls):
    down = Cluster("down")
    address = f"tls://127.0.0.1:{_free_port()}"
    down.outputs = {"scheduler_address": address, "tls": tls.to_dict()}
    started = time.monotonic()
    with pytest.raises(ClusterUnreachableError) as info:
        compute.connect(down, timeout=2)
    assert time.monotonic() - started < 8
    message = str(info.value)
    assert "'down'" in message and address in message
    assert "invoke status" in message and "invoke deploy" in message
    assert isinstance(info.value, ComputeError)


def test_connect_not_deployed_names_cluster():
    with pytest.raises(ResourceNotDeployedError, match="Cluster 'never-deployed'"):
        compute.connect(Cluster("never-deployed"))


def test_connect_missing_tls_files(tls, tmp_path):
    broken = Cluster("broken")
    broken.outputs = {
        "scheduler_address": "tls://127.0.0.1:1",
        "tls": {**tls.to_dict(), "client_key": str(tmp_path / "gone.pem")},
    }
    with pytest.raises(ComputeError, match="gone.pem"):
        compute.connect(broken)


def test_import_is_light():
    code = "import sys, rh_iac.compute; bad = [m for m in ('dask', 'distributed') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- calls ---------------------------------------------------------------------------------------------------------
def test_call_with_closure_args_kwargs_and_return_types(cluster):
    offset = 100
    table = {"a": 1}

    def combine(x, y, *rest, scale=1, **extra):
        return {
            "sum": (x + y + sum(rest)) * scale + offset,
            "extra": extra,
            "table": table,
            "tuple": (x, y),
            "set": {x, y},
            "bytes": b"\x00\x01",
            "none": None,
            "pid": os.getpid(),
        }

    remote = compute.function(combine).to(cluster)
    out = remote(1, 2, 3, scale=10, tag="t")
    assert out["sum"] == 160
    assert out["extra"] == {"tag": "t"}
    assert out["table"] == {"a": 1}
    assert out["tuple"] == (1, 2) and out["set"] == {1, 2} and out["bytes"] == b"\x00\x01" and out["none"] is None
    assert out["pid"] != os.getpid()  # it really ran in a worker process

    worker_pids = set(compute.connect(cluster).run(os.getpid).values())
    assert out["pid"] in worker_pids


def test_function_called_directly_runs_locally():
    f = compute.function(lambda x: (x, os.getpid()))
    assert f(3) == (3, os.getpid())
    with pytest.raises(TypeError):
        compute.function(42)


def test_call_returns_objects_of_locally_defined_classes(cluster):
    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

    p = compute.function(lambda: Point(1, 2)).to(cluster)()
    assert (p.x, p.y) == (1, 2)


def test_remote_exception_type_and_traceback(cluster):
    def failing_division(x):
        return 1 / (x - x)

    with pytest.raises(ZeroDivisionError) as info:
        compute.function(failing_division).to(cluster)(3)
    exc = info.value
    assert type(exc) is ZeroDivisionError
    text = "".join(traceback.format_exception(exc))
    assert "Remote traceback of test_remote_exception_type_and_traceback.<locals>.failing_division() on worker" in text
    assert "in failing_division" in text  # the remote frame
    assert "return 1 / (x - x)" in text  # with its source line (cloudpickle's <dynamic-code> file name undone)
    assert __file__ in text
    workers = set(compute.connect(cluster).nthreads())
    assert any(w in text for w in workers), text  # the worker's address
    assert any("Remote traceback" in note for note in exc.__notes__)


def test_remote_exception_of_a_locally_defined_class_keeps_its_type(cluster):
    class QuotaExceeded(Exception):
        pass

    def spend():
        raise QuotaExceeded("over budget")

    with pytest.raises(QuotaExceeded, match="over budget") as info:
        compute.function(spend).to(cluster)()
    assert type(info.value) is QuotaExceeded


def test_notes_survive_pickling():
    exc = KeyError("k")
    exc.add_note("remote note")
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is KeyError and again.__notes__ == ["remote note"]


def test_submit_returns_a_future(cluster):
    future = compute.function(lambda a, b=0: a * b).to(cluster).submit(6, b=7)
    assert future.result() == 42


# --- map -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [None, 7, 1])
def test_map_keeps_order(cluster, batch_size):
    shift = 3
    remote = compute.function(lambda x: x * x + shift).to(cluster)
    assert remote.map(range(1000), batch_size=batch_size) == [x * x + shift for x in range(1000)]


def test_map_spreads_chunks_over_workers(cluster):
    remote = compute.function(lambda x: (x, os.getpid())).to(cluster)
    out = remote.map(range(400))
    assert [x for x, _ in out] == list(range(400))
    assert len({pid for _, pid in out}) == 2


def test_map_of_nothing():
    assert compute.RemoteFunction(abs, Cluster("unused")).map([]) == []


def test_map_rejects_bad_batch_size(cluster):
    with pytest.raises(ValueError, match="batch_size"):
        compute.function(abs).to(cluster).map([1], batch_size=0)


def test_map_failure_names_first_failing_index(cluster):
    def check(x):
        if x in (537, 900):
            raise ValueError(f"bad item {x}")
        return x

    with pytest.raises(ValueError, match="bad item 537") as info:
        compute.function(check).to(cluster).map(range(1000))
    notes = "\n".join(info.value.__notes__)
    assert "map item 537" in notes and "check()" in notes
    assert "900" not in notes
    assert "Remote traceback" in "".join(traceback.format_exception(info.value))


def test_map_of_10000_tiny_items(cluster):
    remote = compute.function(lambda x: x + 1).to(cluster)
    out = remote.map(range(10_000))
    assert out == list(range(1, 10_001))
