"""rh_iac.codesync: the project's own modules, importable on a real mutual-TLS Dask cluster's workers.

Worker processes are spawned by multiprocessing, which copies the parent's ``sys.path`` into each child at start. So
every cluster here is started before a test puts its project on this process's ``sys.path``, and workers started
later (scale up, restart) are started while the project is off it: what the workers import comes from code sync.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path

import cloudpickle
import pytest

from rh_iac import codesync, compute
from rh_iac.codesync import ensure_synced, project_snapshot, sync_code, synced_digest, unsync_code
from rh_iac.errors import CodeSyncError, ComputeError
from rh_iac.model import Cluster

# The helpers below run on the workers: pickle them by value (the workers need not import this test module).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PROJECT_NAMES = ("stacks", "mylib")

JOBS_V1 = '''
def double(x):
    return 2 * x


def version():
    return "v1"
'''

HELPERS = '''
FACTOR = 10


class Box:
    def __init__(self, value):
        self.value = value


def scale(x):
    return x * FACTOR
'''

UTIL = '''
def f(x):
    from mylib import helpers  # imported inside the body: it must resolve on the worker

    return helpers.scale(x) + 1


def unbox(box):
    return box.value * 3
'''


def write_project(base: Path) -> Path:
    """A project: namespace package stacks/ (no __init__.py), regular package mylib/, and things never synced."""
    root = base / "proj"
    (root / "stacks").mkdir(parents=True)
    (root / "stacks" / "jobs.py").write_text(JOBS_V1)
    (root / "mylib").mkdir()
    (root / "mylib" / "__init__.py").write_text("")
    (root / "mylib" / "py.typed").write_text("")
    (root / "mylib" / "helpers.py").write_text(HELPERS)
    (root / "mylib" / "util.py").write_text(UTIL)
    (root / "mylib" / "data.json").write_text("{}")  # not Python: not synced
    for skipped in (".git/hooks", ".rh_iac/local", ".venv/lib", "venv", "mylib/__pycache__", "build/lib", "dist",
                    "mylib.egg-info", "node_modules/x", "lib/site-packages/pkg", "tools_env"):
        (root / skipped).mkdir(parents=True, exist_ok=True)
        (root / skipped / "skipped.py").write_text("raise RuntimeError('must not be synced')\n")
    (root / "tools_env" / "pyvenv.cfg").write_text("home = /usr/bin\n")  # a virtualenv with an unusual name
    return root


def bump(path: Path, text: str) -> None:
    """Rewrite ``path`` and move its mtime forward (an edit within the same mtime tick would look unchanged)."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def _origin(name):
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:  # the parent package is not there either
        return None
    return None if spec is None else spec.origin


def _module_file(name):
    import importlib

    return importlib.import_module(name).__file__


def _call(module, attr, *args):
    import importlib

    return getattr(importlib.import_module(module), attr)(*args)


def _worker_state(dask_worker):
    import sys as s

    plugin = dask_worker.plugins.get("rh_iac-code-sync")
    return {"local_directory": dask_worker.local_directory, "sys_path": list(s.path), "pid": os.getpid(),
            "plugin": None if plugin is None else (id(plugin), plugin.digest)}


def _forget_project_modules() -> None:
    for name in [n for n in sys.modules if n.partition(".")[0] in PROJECT_NAMES]:
        del sys.modules[name]
    importlib.invalidate_caches()


@contextlib.contextmanager
def off_sys_path(root: Path):
    """Take the project off this process's sys.path for a while: workers spawned meanwhile do not inherit it."""
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if p != str(root)]
    try:
        yield
    finally:
        sys.path[:] = saved


def start_cluster(tls, n_workers=2):
    from distributed import LocalCluster

    lc = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1", protocol="tls",
                      security=tls.all_roles_security(), dashboard_address=None)
    c = Cluster("code")
    c.outputs = {"scheduler_address": lc.scheduler_address, "tls": tls.to_dict()}
    return c, lc


@pytest.fixture(scope="module")
def code_cluster(tls):
    """The conftest recipe (2 TLS worker processes), started before any test puts a project on sys.path."""
    c, lc = start_cluster(tls)
    try:
        yield c, lc
    finally:
        try:
            compute.disconnect(c)
        finally:
            lc.close()


@pytest.fixture
def client(code_cluster):
    c, _ = code_cluster
    client = compute.connect(c)
    try:
        yield client
    finally:
        unsync_code(client)  # every test starts from workers without project code


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = write_project(tmp_path)
    _forget_project_modules()
    monkeypatch.syspath_prepend(str(root))
    try:
        yield root
    finally:
        _forget_project_modules()


def assert_not_on_workers(client, name="stacks.jobs"):
    assert set(client.run(_origin, name).values()) == {None}, f"{name} is importable on a worker before sync"


# --- the snapshot --------------------------------------------------------------------------------------------------
def test_snapshot_holds_the_python_source_only(tmp_path):
    root = write_project(tmp_path)
    (root / "rh_iac").mkdir()
    (root / "rh_iac" / "__init__.py").write_text("")  # would replace rh_iac inside the workers: not synced
    snap = project_snapshot(root)
    assert snap.files == ("mylib/__init__.py", "mylib/helpers.py", "mylib/py.typed", "mylib/util.py",
                          "stacks/jobs.py")
    assert snap.top_level_names == ("mylib", "stacks")
    assert "rh_iac" in snap.skipped
    assert snap.size == sum((root / f).stat().st_size for f in snap.files)
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(snap.zip_bytes)) as zf:
        assert sorted(zf.namelist()) == list(snap.files)
        assert zf.read("stacks/jobs.py").decode() == JOBS_V1


def test_unchanged_tree_is_not_read_again_and_edits_are_seen(tmp_path, monkeypatch):
    root = write_project(tmp_path)
    first = project_snapshot(root)
    zipped = first.zip_bytes
    opened = []
    real_open = open
    monkeypatch.setattr(codesync, "open", lambda path, *a, **k: (opened.append(path), real_open(path, *a, **k))[1],
                        raising=False)
    again = project_snapshot(root)
    assert again.digest == first.digest and opened == []  # stat calls only
    assert again.zip_bytes is zipped and opened == []  # the zip is built once per digest

    jobs = root / "stacks" / "jobs.py"
    bump(jobs, JOBS_V1.replace('"v1"', '"v2"'))  # same size: only the stat key tells
    edited = project_snapshot(root)
    assert edited.digest != first.digest and opened == [str(jobs)]

    os.utime(jobs)  # touched, content unchanged: read again, same digest
    assert project_snapshot(root).digest == edited.digest


def test_digest_depends_on_paths_and_contents(tmp_path):
    root = write_project(tmp_path)
    base = project_snapshot(root).digest
    (root / "mylib" / "helpers.py").rename(root / "mylib" / "helpers2.py")
    renamed = project_snapshot(root).digest
    assert renamed != base
    (root / "mylib" / "helpers2.py").rename(root / "mylib" / "helpers.py")
    assert project_snapshot(root).digest == base


def test_too_large_snapshot_is_refused_with_size_and_fix(tmp_path):
    root = write_project(tmp_path)
    with open(root / "mylib" / "generated.py", "wb") as fh:
        fh.truncate(51 * 1024 * 1024)  # sparse: 51 MB by stat, no disk used; refused before it is read
    with pytest.raises(CodeSyncError) as info:
        project_snapshot(root)
    message = str(info.value)
    assert isinstance(info.value, ComputeError)
    assert "51.0 MB" in message and "50.0 MB" in message and "mylib (51.0 MB)" in message
    assert "build/" in message and "max_bytes" in message
    assert project_snapshot(root, max_bytes=60 * 1024 * 1024).size > 51 * 1024 * 1024


def test_file_changed_while_zipping_is_refused(tmp_path):
    root = write_project(tmp_path)
    snap = project_snapshot(root)
    bump(root / "stacks" / "jobs.py", JOBS_V1 + "\n# edited\n")
    with pytest.raises(CodeSyncError, match="changed while"):
        snap.zip_bytes


def test_not_a_folder(tmp_path):
    with pytest.raises(CodeSyncError, match="not a folder"):
        project_snapshot(tmp_path / "missing")


# --- on the cluster ------------------------------------------------------------------------------------------------
def test_function_of_stacks_module_runs_remotely(client, project, code_cluster):
    c, _ = code_cluster
    assert_not_on_workers(client, "stacks.jobs")
    from stacks.jobs import double  # stacks/ has no __init__.py: a namespace package

    payload = compute._dumps(double)
    assert b"stacks.jobs" in payload and b"return" not in payload and len(payload) < 200  # by reference

    digest = sync_code(client, project)
    assert compute.function(double).to(c)(21) == 42
    assert compute.function(double).to(c).map(range(8), batch_size=1) == [2 * i for i in range(8)]
    files = client.run(_module_file, "stacks.jobs")
    states = client.run(_worker_state)
    for address, file in files.items():
        snapshot_dir = os.path.join(states[address]["local_directory"], "rh_iac-code", digest)
        assert file == os.path.join(snapshot_dir, "stacks", "jobs.py")
        assert states[address]["sys_path"][0] == snapshot_dir
        assert str(project) not in states[address]["sys_path"]
    assert not set(client.run(_origin, "mylib.skipped").values()) - {None}


def test_package_function_importing_inside_its_body(client, project, code_cluster):
    c, _ = code_cluster
    assert_not_on_workers(client, "mylib.util")
    from mylib.helpers import Box
    from mylib.util import f, unbox

    assert f(2) == 21
    sync_code(client, project)
    assert compute.function(f).to(c)(2) == 21
    assert client.submit(f, 3).result() == 31  # plain dask works too
    # An argument of a project class: deserialized on the worker from the synced code as well.
    assert compute.function(unbox).to(c)(Box(5)) == 15


def test_edit_then_sync_runs_the_new_code_without_restart(client, project, code_cluster):
    c, _ = code_cluster
    from stacks import jobs

    first = sync_code(client, project)
    assert set(client.run(_call, "stacks.jobs", "version").values()) == {"v1"}
    before = client.run(_worker_state)

    bump(project / "stacks" / "jobs.py", JOBS_V1.replace('"v1"', '"v2"'))
    bump(project / "mylib" / "helpers.py", HELPERS.replace("FACTOR = 10", "FACTOR = 100"))
    second = sync_code(client, project)
    assert second != first

    assert set(client.run(_call, "stacks.jobs", "version").values()) == {"v2"}
    assert compute.function(jobs.version).to(c)() == "v2"  # the client's old module object, by reference
    from mylib.util import f

    assert set(client.run(_call, "mylib.util", "f", 2).values()) == {201}
    assert compute.function(f).to(c)(3) == 301
    after = client.run(_worker_state)
    for address, state in after.items():
        assert state["pid"] == before[address]["pid"]  # the same worker processes
        old_dir = os.path.join(state["local_directory"], "rh_iac-code", first)
        assert old_dir not in state["sys_path"] and not os.path.exists(old_dir)
        assert state["plugin"][1] == second


def test_unchanged_sync_does_not_register_again(client, project, monkeypatch):
    registered = []
    real_register = client.register_plugin
    monkeypatch.setattr(client, "register_plugin", lambda plugin, name=None: (registered.append(plugin.digest),
                                                                             real_register(plugin, name=name))[1])
    digest = sync_code(client, project)
    plugins = {a: s["plugin"] for a, s in client.run(_worker_state).items()}
    assert registered == [digest] and synced_digest(client, project) == digest

    assert sync_code(client, project) == digest
    os.utime(project / "stacks" / "jobs.py")  # touched, not changed: re-hashed, still the same digest
    assert sync_code(client, project) == digest
    assert registered == [digest]
    assert {a: s["plugin"] for a, s in client.run(_worker_state).items()} == plugins  # same plugin objects

    bump(project / "stacks" / "jobs.py", JOBS_V1 + "\n# changed\n")
    changed = sync_code(client, project)
    assert registered == [digest, changed]


def test_ensure_synced_walks_once_per_bound_function(client, project, code_cluster, monkeypatch):
    c, _ = code_cluster
    from stacks.jobs import version

    walks = []
    real_snapshot = codesync.project_snapshot
    monkeypatch.setattr(codesync, "project_snapshot", lambda root, **k: (walks.append(root), real_snapshot(root, **k))[1])
    remote = compute.function(version).to(c)
    assert ensure_synced(remote, client) is client
    assert walks == [project] and synced_digest(client, project) is not None
    ensure_synced(remote, client)
    assert walks == [project]  # the same bound function: no walk
    assert remote() == "v1"

    bump(project / "stacks" / "jobs.py", JOBS_V1.replace('"v1"', '"v3"'))
    again = compute.function(version).to(c)  # the next .to() picks up the edit
    ensure_synced(again, client)
    assert len(walks) == 2 and again() == "v3"


def test_project_root_for_finds_the_functions_project(project, tmp_path, monkeypatch):
    from mylib.util import f
    from stacks.jobs import double

    assert codesync.project_root_for(double) == project
    assert codesync.project_root_for(f) == project
    monkeypatch.chdir(tmp_path)  # no project here or above
    monkeypatch.delenv("RH_IAC_PROJECT", raising=False)
    assert codesync.project_root_for(None) is None
    monkeypatch.setenv("RH_IAC_PROJECT", str(project))
    assert codesync.project_root_for(None) == project
    # the standard library's and rh_iac's own functions need no project code, whatever the current project
    from rh_iac.demo import load_flights

    assert codesync.project_root_for(len) is None
    assert codesync.project_root_for(load_flights) is None


def test_unsync_removes_the_code(client, project):
    sync_code(client, project)
    assert None not in set(client.run(_origin, "stacks.jobs").values())
    unsync_code(client)
    assert_not_on_workers(client, "stacks.jobs")
    assert all(s["plugin"] is None for s in client.run(_worker_state).values())
    assert synced_digest(client, project) is None
    assert sync_code(client, project)  # and it can come back
    assert None not in set(client.run(_origin, "stacks.jobs").values())


def _block_code_dir(block, dask_worker):
    import os as o
    import shutil as sh

    path = o.path.join(dask_worker.local_directory, "rh_iac-code")
    sh.rmtree(path, ignore_errors=True)
    if o.path.isfile(path):
        o.remove(path)
    if block:  # a file where the code folder should be: extracting there fails, as on a full or read-only disk
        with open(path, "w") as fh:
            fh.write("in the way")


def test_worker_setup_failure_is_a_code_sync_error(client, project):
    odd = sorted(client.scheduler_info()["workers"])[0]
    client.run(_block_code_dir, True, workers=[odd])
    try:
        with pytest.raises(CodeSyncError) as info:
            sync_code(client, project)
    finally:
        client.run(_block_code_dir, False, workers=[odd])
    assert str(project) in str(info.value) and "local directory" in str(info.value)
    assert synced_digest(client, project) is None  # not recorded as synced: the next sync tries again
    digest = sync_code(client, project)
    assert {s["plugin"][1] for s in client.run(_worker_state).values()} == {digest}


def test_workers_that_join_later_get_the_code(tls, tmp_path, monkeypatch):
    """A worker added by scaling up, and one restarted by its nanny, import the synced code (and only it)."""
    c, lc = start_cluster(tls, n_workers=1)
    try:
        root = write_project(tmp_path)
        _forget_project_modules()
        monkeypatch.syspath_prepend(str(root))
        client = compute.connect(c)
        assert_not_on_workers(client)
        from stacks.jobs import version

        digest = sync_code(client, root)
        with off_sys_path(root):
            lc.scale(3)
            client.wait_for_workers(3, timeout=60)
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == 3
        assert set(client.run(_call, "stacks.jobs", "version").values()) == {"v1"}
        for address, state in client.run(_worker_state).items():
            assert state["plugin"][1] == digest
            assert str(root) not in state["sys_path"], f"{address} inherited the project path: the test proves nothing"
        assert compute.function(version).to(c)() == "v1"

        with off_sys_path(root):
            old_pids = {s["pid"] for s in client.run(_worker_state).values()}
            client.restart_workers([workers[0]], timeout=60)
            client.wait_for_workers(3, timeout=60)
        states = client.run(_worker_state)
        restarted = [a for a, s in states.items() if s["pid"] not in old_pids]
        assert len(restarted) == 1
        assert client.run(_call, "stacks.jobs", "version", workers=restarted) == {restarted[0]: "v1"}
        assert states[restarted[0]]["plugin"][1] == digest
        assert synced_digest(client, root) == digest  # nothing to re-sync: the scheduler handed the plugin over
    finally:
        _forget_project_modules()
        try:
            compute.disconnect(c)
        finally:
            lc.close()
