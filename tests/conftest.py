"""Shared fixtures: a throwaway rh_iac project in its own git repository, and clean-up of every process it starts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def recorded_pids(root: Path) -> list[int]:
    """Every PID the local provider recorded under a project's state folder."""
    pids = []
    for path in (root / ".rh_iac").glob("*/resources/*/processes.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        entries = [data.get("scheduler"), *(data.get("workers") or [])]
        pids += [e["pid"] for e in entries if isinstance(e, dict) and isinstance(e.get("pid"), int)]
    return pids


def pid_alive(pid: int) -> bool:
    """Alive means present in /proc and neither zombie nor dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_recorded(root: Path) -> None:
    for pid in recorded_pids(root):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in recorded_pids(root)) and time.monotonic() < deadline:
        time.sleep(0.1)


class ProjectDir:
    """A fresh project: stacks/, tasks.py and .gitignore in a git repo with one commit."""

    def __init__(self, root: Path, home: Path):
        self.root, self.home = root, home

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "RH_IAC_HOME": str(self.home), "RH_IAC_PROJECT": str(self.root), **extra}

    def invoke(self, *args: str, check: bool = True, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        """Run ``invoke <args>`` in the project, as a user would, in a fresh process."""
        cmd = [sys.executable, "-m", "invoke", *args]
        proc = subprocess.run(cmd, cwd=self.root, env=self.env(**env), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def python(self, code: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-c", code], cwd=self.root, env=self.env(**env),
                              capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"python failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def write_stack(self, name: str, body: str) -> Path:
        path = self.root / "stacks" / f"{name}.py"
        path.write_text(body)
        return path

    def git(self, *args: str) -> str:
        return _git(self.root, *args)

    def commits(self) -> int:
        return int(self.git("rev-list", "--count", "HEAD").strip())


def make_project(base: Path) -> ProjectDir:
    root, home = base / "project", base / "home"
    (root / "stacks").mkdir(parents=True)
    home.mkdir()
    shutil.copy(REPO / "stacks" / "local.py", root / "stacks" / "local.py")
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    shutil.copytree(REPO / "jobs", root / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "initial")
    return ProjectDir(root, home)


@pytest.fixture
def project(tmp_path: Path):
    proj = make_project(tmp_path)
    try:
        yield proj
    finally:
        kill_recorded(proj.root)


@pytest.fixture(scope="module")
def deployed_project(tmp_path_factory):
    """The local stack deployed once per test module, destroyed (and every recorded PID killed) afterwards."""
    proj = make_project(tmp_path_factory.mktemp("deployed"))
    try:
        proj.invoke("deploy", RH_IAC_DEMO_TOKEN=CANARY)
        yield proj
    finally:
        proj.invoke("destroy", check=False)
        kill_recorded(proj.root)


#: a recognisable secret value that must never appear anywhere but the encrypted store
CANARY = "canary-7f3a9c1e-never-log-me"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    from rh_iac.tls import issue_cluster_tls

    return issue_cluster_tls(tmp_path_factory.mktemp("stack"), "test", "c")


@pytest.fixture(scope="module")
def cluster(tls):
    """A deployed-looking Cluster('c') backed by a real mutual-TLS LocalCluster (2 worker processes x 1 thread)."""
    from distributed import LocalCluster

    from rh_iac import compute
    from rh_iac.model import Cluster

    lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", protocol="tls",
                      security=tls.all_roles_security(), dashboard_address=None)
    try:
        c = Cluster("c")
        c.outputs = {"scheduler_address": lc.scheduler_address, "tls": tls.to_dict()}
        yield c
    finally:
        try:
            compute.disconnect()
        finally:
            lc.close()
