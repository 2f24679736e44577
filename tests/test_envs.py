"""Per-Env virtualenvs of the local provider: built once and reused, a new one when the Env changes, the Env's
packages ahead of the deploying environment's, a failed build leaving nothing behind; and end to end, workers that
run in their Env's venv, and a deploy whose Env cannot be installed that leaves the running cluster as it was.

The packages are wheels made here (no build, no download), except the one that must not exist, which pip looks up.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

import distributed
import rh_iac
from rh_iac.errors import DeployError
from rh_iac.providers.local import dask_cluster as dc
from rh_iac.providers.local import envs

from conftest import pid_alive, recorded_pids
from test_local_cluster_driver import harness  # noqa: F401 - the driver fixture that kills what it spawns

pytestmark = pytest.mark.timeout(600)

MISSING = "rh-iac-no-such-package-zzz==0.0.1"


def make_wheel(out: Path, dist: str, version: str, files: dict[str, str]) -> Path:
    """A pure-Python wheel of ``files`` (path -> source), as pip would build it."""
    info = f"{dist}-{version}.dist-info"
    contents = {**files,
                f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
                f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: rh-iac-tests\nRoot-Is-Purelib: true\n"
                                 "Tag: py3-none-any\n"}
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    contents[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = out / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            zf.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> SimpleNamespace:
    out = tmp_path_factory.mktemp("wheels")
    return SimpleNamespace(
        probe=make_wheel(out, "rhenvprobe", "1.0", {"rhenvprobe/__init__.py": "VALUE = 'probe-1.0'\n"}),
        # a distribution the deploying environment has too (pytest needs it), at a version it does not have
        shadow=make_wheel(out, "iniconfig", "999.0", {"iniconfig/__init__.py": "SHADOW = True\n"}),
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory, wheels) -> SimpleNamespace:
    """One Env venv with both wheels and a setup command that uses the venv's python, built once per module."""
    state = tmp_path_factory.mktemp("state")
    packages = [str(wheels.probe), str(wheels.shadow)]
    setup = ["python -c 'import rhenvprobe; print(rhenvprobe.VALUE)' > probe.txt"]
    t0 = time.monotonic()
    python = envs.ensure_env(state, "probe", packages, setup)
    build_s = time.monotonic() - t0
    print(f"first env build {build_s:.2f} s")
    return SimpleNamespace(state=state, packages=packages, setup=setup, python=python, build_s=build_s)


@pytest.fixture
def counted_runs(monkeypatch) -> list:
    """Every build step (venv, pip, setup) that ensure_env runs from now on."""
    calls: list = []
    real_run = envs._run

    def run(argv, *args, **kwargs):
        calls.append(argv)
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(envs, "_run", run)
    return calls


def _probe(python: Path, code: str) -> dict:
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _dirs(state: Path) -> list[str]:
    root = Path(state) / "envs"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


# --- ensure_env ----------------------------------------------------------------------------------------------------
def test_built_once_then_reused_and_a_changed_env_gets_a_new_digest(built, counted_runs):
    venv = built.python.parent.parent
    assert venv.parent == built.state.resolve() / "envs"
    assert venv.name == f"probe-{envs.env_digest(built.packages, built.setup)}"
    assert _dirs(built.state) == [venv.name]  # no build directory left over
    assert (venv / "probe.txt").read_text() == "probe-1.0\n"  # setup ran after pip, in the venv, with its python

    stamp = venv.stat().st_ino, venv.stat().st_mtime_ns
    t0 = time.monotonic()
    again = envs.ensure_env(built.state, "probe", list(built.packages), list(built.setup))
    reuse_s = time.monotonic() - t0
    print(f"env reuse {reuse_s * 1000:.2f} ms (first build {built.build_s:.2f} s)")
    assert again == built.python and counted_runs == []  # nothing was run: no venv, no pip, no setup
    assert (venv.stat().st_ino, venv.stat().st_mtime_ns) == stamp and reuse_s < 0.5

    same = envs.env_dir(built.state, "probe", built.packages, built.setup)
    assert same == venv
    for packages, setup in ((built.packages[:1], built.setup), ([*built.packages, "six"], built.setup),
                            (built.packages, [*built.setup, "true"])):
        assert envs.env_dir(built.state, "probe", packages, setup).name != venv.name
    assert envs.env_dir(built.state, "other", built.packages, built.setup).name.startswith("other-")


def test_env_packages_take_precedence_and_base_packages_stay_importable(built):
    code = ("import importlib.metadata as md, json, sys, iniconfig, rhenvprobe, dask, distributed, rh_iac, "
            "runtime.dask_node\n"
            "print(json.dumps({'exe': sys.executable, 'probe': rhenvprobe.VALUE, 'shadow': iniconfig.__file__,"
            " 'shadow_version': md.version('iniconfig'), 'shadowed': getattr(iniconfig, 'SHADOW', False),"
            " 'distributed': distributed.__version__, 'dask': dask.__version__, 'rh_iac': rh_iac.__file__,"
            " 'rh_iac_version': rh_iac.__version__}))")
    got = _probe(built.python, code)
    venv = str(built.python.parent.parent)
    assert got["exe"] == str(built.python) and got["probe"] == "probe-1.0"
    # the Env's iniconfig wins over the deploying environment's...
    assert got["shadowed"] is True and got["shadow_version"] == "999.0" and got["shadow"].startswith(venv + "/")
    # ...which pip left alone (it is outside the venv): pytest here still has the real one
    import iniconfig

    assert md.version("iniconfig") != "999.0" and not hasattr(iniconfig, "SHADOW")
    assert Path(iniconfig.__file__).exists()
    # client and workers share the deploying environment's versions, and rh_iac's own code
    import dask

    assert got["distributed"] == distributed.__version__ and got["dask"] == dask.__version__
    assert got["rh_iac"] == rh_iac.__file__ and got["rh_iac_version"] == rh_iac.__version__


def test_a_package_that_does_not_exist_fails_with_pips_error_and_leaves_nothing(tmp_path):
    with pytest.raises(DeployError) as err:
        envs.ensure_env(tmp_path, "broken", [MISSING], [])
    message = str(err.value)
    assert "Env 'broken'" in message and MISSING in message
    assert f"No matching distribution found for {MISSING}" in message  # pip's own words, from its output's tail
    assert _dirs(tmp_path) == []


def test_a_failing_setup_command_fails_with_its_output_and_leaves_nothing(tmp_path):
    with pytest.raises(DeployError) as err:
        envs.ensure_env(tmp_path, "setup-fails", [], ["true", "echo step-two-said-this; exit 3"])
    message = str(err.value)
    assert "Env 'setup-fails'" in message and "exit code 3" in message and "step-two-said-this" in message
    assert _dirs(tmp_path) == []
    # nor does a build that runs out of time, and what its step started is stopped
    pid_file = tmp_path / "sleeper.pid"
    with pytest.raises(DeployError, match="timed out"):
        envs.ensure_env(tmp_path, "slow", [], [f"sleep 60 & echo $! > {pid_file}; wait"], timeout=5)
    assert _dirs(tmp_path) == []
    sleeper = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while pid_alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(sleeper)


def test_concurrent_builders_build_once_and_prune_spares_what_is_in_use(tmp_path, counted_runs):
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(envs.ensure_env(tmp_path, "p", [], ["true"])))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 3 and len(set(results)) == 1
    assert sum(1 for argv in counted_runs if "venv" in argv) == 1  # one venv was created, not three
    old = results[0]
    new = envs.ensure_env(tmp_path, "p", [], ["true", "true"])
    other = envs.ensure_env(tmp_path, "p-other", [], ["true"])  # a name that starts like "p-": not p's
    assert old != new

    user = subprocess.Popen([str(old), "-c", "import time; time.sleep(120)"])
    try:
        deadline = time.monotonic() + 10
        while not envs._in_use(old.parent.parent) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert envs.prune_envs(tmp_path, "p", keep=new.parent.parent) == []  # old is still running
        assert old.exists()
    finally:
        user.kill()
        user.wait()
    assert envs.prune_envs(tmp_path, "p", keep=new.parent.parent) == [old.parent.parent]
    assert _dirs(tmp_path) == sorted([new.parent.parent.name, other.parent.parent.name])
    assert new.exists() and other.exists()


# --- the driver ------------------------------------------------------------------------------------------------------
SPEC = {"workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB", "autostop_mins": 30,
        "env_vars": {"RH_PROBE_VAR": "from-env"}, "env_name": "drv", "env_setup": []}


def _worker_view(state: dict) -> list[dict]:
    from distributed import Client

    from rh_iac.tls import ClusterTLS

    def view():
        import os
        import sys

        try:
            import rhenvprobe
            probe = rhenvprobe.VALUE
        except ImportError:
            probe = None
        return {"exe": sys.executable, "var": os.environ.get("RH_PROBE_VAR"), "probe": probe, "pid": os.getpid()}

    with Client(state["scheduler_address"], security=ClusterTLS.from_dict(state["tls"]).security("client"),
                timeout=10, set_as_default=False) as client:
        return list(client.run(view).values())


def test_driver_switches_workers_to_a_changed_env_and_prunes_the_old_one(harness, wheels):
    spec = {**SPEC, "env_packages": [str(wheels.probe)]}
    state = harness.create("drv", spec)
    record = dc._load(harness.resource_dir("drv"))
    first = Path(record["python"])
    assert first.parent.parent.parent == harness.state_dir.resolve() / "envs"
    assert [(w["exe"], w["var"], w["probe"]) for w in _worker_view(state)] == [(str(first), "from-env", "probe-1.0")]

    # an Env that cannot be installed: the running worker is untouched and the record still names its venv
    with pytest.raises(DeployError, match="No matching distribution found"):
        harness.update("drv", state, {**spec, "env_packages": [MISSING]})
    assert harness.read("drv", state) == state and dc._load(harness.resource_dir("drv"))["python"] == str(first)

    # a changed Env: a new venv, the worker restarted in it, the old venv deleted once nothing runs it
    state2 = harness.update("drv", state, {**spec, "env_packages": [], "env_setup": ["true"]})
    second = Path(dc._load(harness.resource_dir("drv"))["python"])
    assert second != first and not set(state["worker_pids"]) & set(state2["worker_pids"])
    assert state2["scheduler_pid"] == state["scheduler_pid"]  # the scheduler stayed
    assert [(w["exe"], w["probe"]) for w in _worker_view(state2)] == [(str(second), None)]
    assert _dirs(harness.state_dir) == [second.parent.parent.name]

    # no Env: back on the deploying interpreter; delete removes the venvs nothing runs any more
    state3 = harness.update("drv", state2, {**spec, "env_name": None, "env_packages": []})
    assert [w["exe"] for w in _worker_view(state3)] == [sys.executable]
    assert _dirs(harness.state_dir) == []
    state4 = harness.update("drv", state3, spec)
    dc.delete("drv", state4, harness.state_dir)
    assert _dirs(harness.state_dir) == [] and harness.alive() == []


# --- end to end ------------------------------------------------------------------------------------------------------
ENV_STACK = """
from rh_iac import Cluster, Env, Stack
with Stack("envs", provider="local"):
    probe = Env("probe-env", packages={packages!r}, env_vars={{"RH_PROBE_VAR": "from-env"}})
    Cluster("env-cluster", workers=2, env=probe)
"""

PROBE_RUN = """
import json, rh_iac

def probe():
    import os, sys
    import rhenvprobe
    return {"var": os.environ.get("RH_PROBE_VAR"), "probe": rhenvprobe.VALUE, "exe": sys.executable,
            "pid": os.getpid()}

cluster = rh_iac.load("env-cluster")
one = rh_iac.function(probe).to(cluster)()
every = list(cluster.client().run(probe).values())
print(json.dumps({"one": one, "every": every}))
"""


def _cluster_state(project) -> dict:
    doc = json.loads((project.root / ".rh_iac/envs/terraform/terraform.tfstate").read_text())
    return next(r for r in doc["resources"] if r["name"] == "env-cluster")["instances"][0]["attributes"]


def test_deploy_runs_workers_in_the_env_and_a_broken_env_leaves_the_stack_as_it_was(project, wheels):
    project.write_stack("envs", ENV_STACK.format(packages=[str(wheels.probe)]))
    t0 = time.monotonic()
    project.invoke("deploy", "--stack", "envs")
    print(f"deploy with a new env {time.monotonic() - t0:.1f} s")
    assert "No changes" in project.invoke("deploy", "--stack", "envs").stdout  # the Env's attributes are stable
    state = _cluster_state(project)
    assert state["env_name"] == "probe-env" and state["env_packages"] == [str(wheels.probe)]
    record = json.loads((project.root / ".rh_iac/envs/resources/env-cluster/processes.json").read_text())
    env_python = record["python"]
    assert Path(env_python).parent.parent.parent == (project.root / ".rh_iac/envs/envs").resolve()

    got = json.loads(project.python(PROBE_RUN).stdout)
    assert got["one"]["var"] == "from-env" and got["one"]["probe"] == "probe-1.0" and got["one"]["exe"] == env_python
    assert [(w["var"], w["probe"], w["exe"]) for w in got["every"]] == [("from-env", "probe-1.0", env_python)] * 2

    # the Env now asks for a package that does not exist: the deploy fails with pip's error...
    project.write_stack("envs", ENV_STACK.format(packages=[MISSING]))
    proc = project.invoke("deploy", "--stack", "envs", check=False)
    assert proc.returncode != 0
    assert f"No matching distribution found for {MISSING}" in proc.stdout + proc.stderr
    # ...and the stack stays as it was: the same workers, alive, in the old venv, and status says healthy
    after = _cluster_state(project)
    assert after["worker_pids"] == state["worker_pids"] and after["env_packages"] == [str(wheels.probe)]
    assert all(pid_alive(int(p)) for p in state["worker_pids"])
    again = json.loads(project.python(PROBE_RUN).stdout)
    assert sorted(w["pid"] for w in again["every"]) == sorted(w["pid"] for w in got["every"])
    status = project.invoke("status", "--stack", "envs").stdout
    assert "healthy" in status and "2/2 workers" in status

    project.invoke("destroy", "--stack", "envs")
    time.sleep(0.5)
    assert not [pid for pid in recorded_pids(project.root) if pid_alive(pid)]
    assert _dirs(project.root / ".rh_iac/envs") == []  # the venvs went with the last cluster that used them
