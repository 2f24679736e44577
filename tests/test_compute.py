"""rh_iac.compute against a real mutual-TLS Dask cluster of local processes."""

from __future__ import annotations

import concurrent.futures
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

import pytest

from project_helpers import project_importable, record_cluster, wait_for_file

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


def test_import_of_every_compute_module_is_light():
    code = ("import sys, rh_iac, rh_iac.compute, rh_iac.modules, rh_iac.remote_exec, rh_iac.coderef, rh_iac.resolver;"
            "rh_iac.function, rh_iac.module, rh_iac.load, rh_iac.connect;"
            "print([m for m in ('dask', 'distributed') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- helpers for the tests below -----------------------------------------------------------------------------------


def _slow_until_interrupted(started: str, outcome: str, steps: int = 600) -> str:
    """Sleeps in small steps (~30 s in all) and records how it ended: interrupted, or finished."""
    Path(started).write_text(str(os.getpid()))
    try:
        for _ in range(steps):
            time.sleep(0.05)
    except BaseException as exc:
        Path(outcome).write_text(type(exc).__name__)
        raise
    Path(outcome).write_text("finished")
    return "finished"


def _workers_back(cluster, n: int = 2) -> set[int]:
    """Wait until the nanny restarted killed workers; the worker pids."""
    client = compute.connect(cluster)
    client.wait_for_workers(n, timeout=120)
    return set(client.run(os.getpid).values())


# --- Call: .remote() ------------------------------------------------------------------------------------------------
def test_remote_returns_a_call(cluster):
    call = compute.function(lambda a, b=0: (a * b, os.getpid())).to(cluster).remote(6, b=7)
    assert isinstance(call, compute.Call)
    value, pid = call.result()
    assert value == 42 and pid != os.getpid()
    assert call.done() and call.exception() is None
    assert call.cancel() is False and not call.cancelled()  # too late: it finished
    assert "done" in repr(call) and "<lambda>()" in repr(call)


def test_call_reraises_the_remote_exception(cluster):
    def broken(x):
        raise LookupError(f"no {x}")

    call = compute.function(broken).to(cluster).remote("thing")
    with pytest.raises(LookupError, match="no thing") as info:
        call.result()
    assert "Remote traceback of test_call_reraises_the_remote_exception.<locals>.broken() on worker" in "\n".join(
        info.value.__notes__)
    exc = call.exception()
    assert type(exc) is LookupError and str(exc) == "no thing"


def test_call_cancel_interrupts_the_running_code(cluster, tmp_path):
    started, outcome = tmp_path / "started", tmp_path / "outcome"
    call = compute.function(_slow_until_interrupted).to(cluster).remote(str(started), str(outcome))
    wait_for_file(started)
    assert not call.done()
    assert call.cancel() is True and call.cancelled()
    with pytest.raises(compute.CallCancelledError, match="_slow_until_interrupted"):
        call.result()
    with pytest.raises(concurrent.futures.CancelledError):  # the standard family, too
        call.exception()
    assert wait_for_file(outcome) == "CallInterrupted"  # the worker thread stopped running it


def test_result_wait_timeout_leaves_the_call_running(cluster, tmp_path):
    gate = tmp_path / "gate"

    def wait_for_gate():
        while not gate.exists():
            time.sleep(0.02)
        return "through"

    call = compute.function(wait_for_gate).to(cluster).remote()
    with pytest.raises(compute.CallTimeoutError, match=r"still running after result\(timeout=0.2\)"):
        call.result(timeout=0.2)
    with pytest.raises(TimeoutError):
        call.exception(timeout=0.1)
    assert not call.done() and not call.cancelled()
    gate.write_text("open")
    assert call.result() == "through"


# --- options: timeout, retries ---------------------------------------------------------------------------------------
def test_options_are_validated_and_copied(cluster):
    remote = compute.function(abs).to(cluster)
    assert remote.call_options == compute.CallOptions()
    faster = remote.options(timeout=5, retries=2)
    assert faster is not remote and faster.call_options == compute.CallOptions(timeout=5, retries=2)
    assert remote.call_options.timeout is None  # the original is unchanged
    assert faster.options(stream_logs=True).call_options.retries == 2
    for bad in ({"timeout": 0}, {"timeout": -1}, {"timeout": "5"}, {"timeout": float("inf")}, {"retries": -1},
                {"retries": 1.5}, {"retries": True}, {"stream_logs": "yes"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            remote.options(**bad)
        with pytest.raises(ValueError, match=next(iter(bad))):
            compute.function(abs).to(cluster, **bad)
    with pytest.raises(TypeError, match="unknown option.*retry"):
        remote.options(retry=1)
    with pytest.raises(ValueError, match="retries"):
        remote.map([1], retries=-1)


def test_timeout_raises_names_the_function_and_cancels_the_work(cluster, tmp_path):
    started, outcome = tmp_path / "started", tmp_path / "outcome"
    remote = compute.function(_slow_until_interrupted).to(cluster, timeout=0.5)
    with pytest.raises(compute.CallTimeoutError) as info:
        remote(str(started), str(outcome))
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, ComputeError)
    message = str(info.value)
    assert "_slow_until_interrupted()" in message and "0.5 s" in message and "cancelled" in message
    assert wait_for_file(outcome) == "CallInterrupted"  # not left running for ~30 s on the worker
    assert compute.function(lambda: "still healthy").to(cluster, timeout=30)() == "still healthy"


def test_timeout_of_a_call_started_with_remote(cluster, tmp_path):
    started, outcome = tmp_path / "started", tmp_path / "outcome"
    call = compute.function(_slow_until_interrupted).to(cluster).options(timeout=0.5).remote(str(started), str(outcome))
    exc = call.exception()  # the call's own timeout is its outcome, not a wait timeout
    assert isinstance(exc, compute.CallTimeoutError) and "0.5 s" in str(exc)
    with pytest.raises(compute.CallTimeoutError):
        call.result()  # the same outcome again
    assert call.done() and call.cancelled()
    assert wait_for_file(outcome) == "CallInterrupted"


def test_retries_rerun_a_call_that_raised(cluster, tmp_path):
    def flaky(marker):
        if not Path(marker).exists():
            Path(marker).write_text("failed once")
            raise RuntimeError("first attempt fails")
        return "second attempt"

    assert compute.function(flaky).to(cluster, retries=1)(str(tmp_path / "a")) == "second attempt"
    with pytest.raises(RuntimeError, match="first attempt fails"):
        compute.function(flaky).to(cluster)(str(tmp_path / "b"))  # retries=0: no second attempt


def test_map_retries_and_timeout_keywords(cluster, tmp_path):
    marker = tmp_path / "m"

    def flaky_item(x):
        if x == 3 and not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError("item 3 fails once")
        return -x

    remote = compute.function(flaky_item).to(cluster)
    assert remote.map(range(10), retries=1) == [-x for x in range(10)]
    marker.unlink()
    with pytest.raises(RuntimeError, match="item 3 fails once"):
        remote.map(range(10))


def test_map_timeout_cancels_every_chunk(cluster, tmp_path):
    def slow_item(i):
        return _slow_until_interrupted(str(tmp_path / f"started-{i}"), str(tmp_path / f"outcome-{i}"))

    with pytest.raises(compute.CallTimeoutError) as info:
        compute.function(slow_item).to(cluster).map(range(6), batch_size=1, timeout=0.5)
    message = str(info.value)
    assert "slow_item()" in message and "map over 6 items" in message and "0.5 s" in message
    running = [i for i in range(6) if (tmp_path / f"started-{i}").exists()]
    assert running  # the two workers had started some items
    for i in running:
        assert wait_for_file(tmp_path / f"outcome-{i}") == "CallInterrupted"
    assert compute.function(lambda x: x).to(cluster).map(range(3)) == [0, 1, 2]  # the workers are free again


# --- starmap -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [None, 3, 1])
def test_starmap_keeps_order(cluster, batch_size):
    remote = compute.function(lambda a, b, c=0: a * b + c).to(cluster)
    pairs = [(i, i + 1) for i in range(50)] + [[2, 3, 4]]
    assert remote.starmap(pairs, batch_size=batch_size) == [a * b for a, b in pairs[:-1]] + [10]
    assert remote.starmap(iter([])) == []


def test_starmap_failure_names_the_item_and_rejects_non_tuples(cluster):
    def divide(a, b):
        return a / b

    remote = compute.function(divide).to(cluster)
    with pytest.raises(ZeroDivisionError) as info:
        remote.starmap([(1, 1), (2, 1), (3, 0), (4, 0)])
    notes = "\n".join(info.value.__notes__)
    assert "map item 2 ((3, 0))" in notes and "item 3" not in notes
    with pytest.raises(TypeError, match=r"item 1 \(5\) is not an iterable of arguments"):
        remote.starmap([(1, 2), 5])


# --- stream_logs -----------------------------------------------------------------------------------------------------
def test_stream_logs_forwards_stdout_and_stderr(cluster, capsys):
    token = uuid.uuid4().hex

    def chatty(x):
        print(f"out {token} {x}")
        print(f"err {token} {x}", file=sys.stderr)
        sys.stdout.write(f"partial {token}")  # no newline: sent when the call ends
        return x + 1

    assert compute.function(chatty).to(cluster, stream_logs=True)(1) == 2
    captured = capsys.readouterr()
    assert f"out {token} 1\n" in captured.out and f"partial {token}" in captured.out
    assert f"err {token} 1\n" in captured.err and f"err {token}" not in captured.out

    assert compute.function(chatty).to(cluster)(2) == 3  # without the option nothing comes back
    captured = capsys.readouterr()
    assert token not in captured.out + captured.err


def test_stream_logs_of_map_and_remote(cluster, capsys):
    token = uuid.uuid4().hex

    def shout(x):
        print(f"{token}-{x}")
        return x

    remote = compute.function(shout).to(cluster).options(stream_logs=True)
    assert remote.map(range(20)) == list(range(20))
    assert remote.remote(99).result() == 99
    out = capsys.readouterr().out
    assert all(f"{token}-{x}\n" in out for x in [*range(20), 99])


def test_stream_logs_restores_the_workers_streams(cluster):
    client = compute.connect(cluster)

    def streams():
        return id(sys.stdout), id(sys.stderr), type(sys.stdout).__name__

    before = client.run(streams)
    compute.function(lambda: print("x")).to(cluster, stream_logs=True)()
    assert client.run(streams) == before
    assert all(kind != "_StreamTee" for _, _, kind in before.values())


def test_output_capture_is_per_call_not_per_process():
    """Two calls in two threads of one process: only the forwarding call's writes are forwarded, each to its own
    topic, and sys.stdout is the original object again afterwards."""
    from rh_iac import remote_exec

    class FakeWorker:
        def __init__(self):
            self.events = []
            self.lock = threading.Lock()

        def log_event(self, topic, msg):
            with self.lock:
                self.events.append((topic, msg["stream"], msg["text"]))

    worker, original = FakeWorker(), sys.stdout
    barrier = threading.Barrier(3)

    def task(topic, label):
        with remote_exec._ForwardedOutput(worker, topic, f"{label}()"):
            barrier.wait()
            for i in range(50):
                print(f"{label} {i}")
            barrier.wait()

    threads = [threading.Thread(target=task, args=("topic-a", "a")),
               threading.Thread(target=task, args=("topic-b", "b")),
               threading.Thread(target=task, args=(None, "quiet"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sys.stdout is original
    for topic, label in (("topic-a", "a"), ("topic-b", "b")):
        text = "".join(t for top, stream, t in worker.events if top == topic and stream == "stdout")
        assert text == "".join(f"{label} {i}\n" for i in range(50))
    assert {top for top, _, _ in worker.events} == {"topic-a", "topic-b"}


# --- worker death ----------------------------------------------------------------------------------------------------
def test_call_survives_its_worker_being_killed(cluster, tmp_path):
    marker = tmp_path / "killed"

    def die_once(x):
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # the first attempt takes its worker process down
        return x * 10, os.getpid()

    value, pid = compute.function(die_once).to(cluster)(4)
    killed = int(marker.read_text())
    assert value == 40 and pid != killed
    assert killed not in _workers_back(cluster)  # it really died; the nanny started a new one


def test_map_survives_a_worker_killed_mid_map(cluster, tmp_path):
    marker = tmp_path / "killed"

    def die_once_on_item(x):
        if x == 130 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return x * x

    remote = compute.function(die_once_on_item).to(cluster)
    assert remote.map(range(400)) == [x * x for x in range(400)]
    killed = int(marker.read_text())
    assert killed not in _workers_back(cluster)


def test_starmap_survives_a_worker_killed_mid_chunk_with_batch_size_1(cluster, tmp_path):
    marker = tmp_path / "killed"

    def die_once_on(a, b):
        if a == 7 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return a + b

    remote = compute.function(die_once_on).to(cluster)
    assert remote.starmap([(i, 1) for i in range(20)], batch_size=1) == [i + 1 for i in range(20)]
    assert int(marker.read_text()) not in _workers_back(cluster)


def test_a_task_that_kills_every_worker_raises_worker_died(cluster, tmp_path):
    client = compute.connect(cluster)

    def set_allowed_failures(n, dask_scheduler=None):
        old, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, n
        return old

    def always_dies(x):
        os.kill(os.getpid(), signal.SIGKILL)

    old = client.run_on_scheduler(set_allowed_failures, 0)  # give up at the first death, to keep the test short
    try:
        with pytest.raises(compute.WorkerDiedError) as info:
            compute.function(always_dies).to(cluster)(1)
        message = str(info.value)
        assert "always_dies()" in message and "allowed-failures=0" in message and "died" in message
        _workers_back(cluster)
        with pytest.raises(compute.WorkerDiedError, match=r"always_dies\(\) on map items 0-0"):
            compute.function(always_dies).to(cluster).map([1])
    finally:
        client.run_on_scheduler(set_allowed_failures, old)
        _workers_back(cluster)


# --- save / load: functions are resources too ------------------------------------------------------------------------
JOBS = '''\
"""Project code saved by reference in the tests."""


def double(x):
    return 2 * x
'''


def test_saved_function_loads_and_runs_in_a_fresh_process(project, cluster, tmp_path):
    import importlib

    import rh_iac
    from rh_iac.project import Project

    (project.root / "saved_jobs.py").write_text(JOBS)
    record_cluster(project, cluster)
    commits = project.commits()
    with project_importable(cluster, project.root, "saved_jobs"):
        saved_jobs = importlib.import_module("saved_jobs")
        remote = rh_iac.function(saved_jobs.double).to(cluster, timeout=60, stream_logs=True)
        assert remote(4) == 8  # by reference on the workers too: they import saved_jobs from the project root
        record = remote.save("double", project=Project(project.root))

        assert record == {
            "schema_version": 1, "name": "double", "type": "function", "provider": "local",
            "spec": {"module": "saved_jobs", "qualname": "double", "cluster": "c", "timeout": 60, "retries": 0,
                     "stream_logs": True},
            "outputs": {}, "status": "deployed",
        }
        assert json.loads((project.root / "rns" / "double.json").read_text()) == record
        assert project.commits() == commits + 1
        assert project.git("log", "-1", "--format=%s").strip() == "rns: save function double"
        assert project.git("show", "--name-only", "--format=", "HEAD").split() == ["rns/double.json"]

        code = ("import rh_iac; f = rh_iac.load('double'); "
                "print(type(f).__name__, f.call_options.timeout, f.call_options.stream_logs); print(f(21))")
        out = project.python(code).stdout.split("\n")
        assert out[0] == "RemoteFunction 60 True"
        assert out[1] == "42"

        # from another directory: load puts the project root on sys.path itself
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        proc = subprocess.run([sys.executable, "-c", "import rh_iac; print(rh_iac.load('double').map([1, 2, 3]))"],
                              cwd=elsewhere, env=project.env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "[2, 4, 6]"


def test_save_refuses_code_that_cannot_be_imported_by_name(project, cluster):
    from rh_iac.coderef import CodeReferenceError
    from rh_iac.errors import RNSError
    from rh_iac.project import Project

    record_cluster(project, cluster)
    proj, commits = Project(project.root), project.commits()

    def nested(x):
        return x

    namespace = {"__name__": "__main__"}
    exec("def script_job(x):\n    return x\n", namespace)  # what a function of a script run as __main__ looks like

    cases = [
        (lambda x: x, "lambda", "top level"),
        (nested, "defined inside test_save_refuses_code_that_cannot_be_imported_by_name()", "move it out"),
        (namespace["script_job"], "__main__", "e.g. jobs.py"),
    ]
    for fn, reason, fix in cases:
        with pytest.raises(CodeReferenceError) as info:
            compute.function(fn).to(cluster).save("job", project=proj)
        message = str(info.value)
        assert reason in message and fix in message, message
        assert compute._name_of(fn) in message
        assert isinstance(info.value, RNSError)
    assert not (project.root / "rns" / "job.json").exists() and project.commits() == commits


def test_save_checks_the_name_and_the_cluster(project, cluster):
    from rh_iac.errors import InvalidNameError, RNSError
    from rh_iac.project import Project

    proj = Project(project.root)
    remote = compute.function(os.getcwd).to(cluster)  # importable by name: os.getcwd
    with pytest.raises(RNSError, match=r"cluster 'c' has no RNS record.*invoke deploy"):
        remote.save("cwd", project=proj)
    record_cluster(project, cluster)
    with pytest.raises(RNSError, match="already belongs to a cluster"):
        remote.save("c", project=proj)  # never overwrite the cluster's own record
    with pytest.raises(InvalidNameError):
        remote.save("Bad_Name", project=proj)
    assert remote.save("cwd", project=proj)["spec"]["module"] == "posix"  # os.getcwd lives in posix


def test_load_of_a_function_whose_code_is_gone(project, cluster, monkeypatch):
    from rh_iac.errors import RNSError
    from rh_iac.project import Project
    from rh_iac.resolver import load

    monkeypatch.setattr(sys, "path", list(sys.path))  # load may add the project root: undo it afterwards
    record_cluster(project, cluster)
    rns = Project(project.root).rns()
    rns.write({"schema_version": 1, "name": "gone", "type": "function", "provider": "local",
               "spec": {"module": "no_such_jobs_module", "qualname": "f", "cluster": "c"}, "outputs": {},
               "status": "deployed"})
    with pytest.raises(RNSError, match=r"'gone' refers to no_such_jobs_module\.f, which cannot be imported"):
        load("gone", project=Project(project.root))
    assert str(project.root) in sys.path
