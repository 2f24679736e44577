"""Local Dask clusters: a TLS-only scheduler and nanny-supervised workers, run as detached processes on this host.

The driver behind ``rhlocal_dask_cluster`` (Terraform) and the Pulumi dynamic provider; it knows no engine. Every
process is started in its own session (it survives the provider plugin that started it) and is recorded in
``<state_dir>/resources/<name>/processes.json``, so a lost or stale state can still be cleaned up. Liveness is judged
by ``/proc/PID/stat`` (a zombie is dead, and ``os.kill(pid, 0)`` would wrongly say alive) plus the command line (so a
reused PID is not mistaken for ours) and by the scheduler accepting connections. ``distributed`` is imported only to
wait for workers to register; ``read`` and ``health`` stay on ``/proc`` and one socket.

A cluster with an Env runs its workers in that Env's virtualenv (:mod:`rh_iac.providers.local.envs`), built before
any running process is touched: an Env that cannot be built fails the deploy and leaves the cluster as it was. The
scheduler always runs on this interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rh_iac.errors import DeployError
from rh_iac.providers.local.envs import ensure_env, prune_envs
from rh_iac.tls import ClusterTLS, issue_cluster_tls
from runtime.dask_node import SCHEDULER_MODULE, WORKER_MODULE, scheduler_argv, worker_argv

SCALER_MODULE = "runtime.local_scaler"

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0  #: how long create/update wait for the scheduler, then for the workers
STOP_GRACE_S = 10.0  #: SIGTERM, then SIGKILL after this long
DEATH_TIMEOUT_S = 60  #: a worker stops this long after losing its scheduler
_CHILDREN: dict[int, subprocess.Popen] = {}  # started by this interpreter: polled so they do not linger as zombies


# --- /proc, sockets, logs ----------------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int] | None:
    """``(state, process group)`` of ``pid`` from /proc, or None if there is no such process."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            data = f.read()
    except (OSError, ValueError):
        return None
    fields = data[data.rindex(")") + 2:].split()  # the command name in parentheses may contain spaces
    return fields[0], int(fields[2])


def _alive(pid: int | None) -> bool:
    """True if ``pid`` exists and is neither a zombie (Z) nor dead (X)."""
    st = _stat(pid) if pid else None
    return st is not None and st[0] not in ("Z", "X", "x")


def _ours(pid: int | None, module: str, cert: str) -> bool:
    """True if ``pid`` is alive and runs ``module`` with ``cert`` (this cluster's), i.e. the PID was not reused."""
    if not _alive(pid):
        return False
    try:
        cmd = Path(f"/proc/{int(pid)}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return module in cmd and cert in cmd


def _live_groups(pgids: set[int]) -> set[int]:
    """Those of ``pgids`` that still have a live (non-zombie) member: a nanny, its worker, its resource tracker."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) and st[1] in pgids and st[0] not in ("Z", "X", "x"):
            found.add(st[1])
    return found


def _port_open(host: str, port: int, tls: ClusterTLS | None = None, timeout: float = 1.0) -> bool:
    """True if ``host:port`` accepts a TCP connection.

    With ``tls`` the connection also completes a TLS handshake as a client (its outcome is ignored): a bare connect
    would make the scheduler log a "TLS handshake failed" warning at every check.
    """
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError:
        return False
    with sock:
        if tls is not None:
            try:
                ctx = ssl.create_default_context(cafile=tls.ca_file)
                ctx.load_cert_chain(tls.client_cert, tls.client_key)
                ctx.wrap_socket(sock, server_hostname=host).close()
            except (OSError, ValueError):
                pass
    return True


def _log_tail(path: Path | str, n: int = 20) -> str:
    """The last ``n`` lines of a log file, or a note that it cannot be read."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    return host, int(port)


# --- processes ---------------------------------------------------------------------------------------------------
def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def _spawn(argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> int:
    """Start ``argv`` detached (own session, no stdin, output to ``log`` 0600); returns its PID."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT, env=env,
                                cwd=cwd, start_new_session=True, close_fds=True)
    finally:
        os.close(fd)
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _stop(procs: list[tuple[int, str, str]]) -> None:
    """Stop the process groups led by ``(pid, module, cert)``: SIGTERM, SIGKILL after a grace, wait until gone.

    A group is skipped only if its live leader is not ours (a reused PID). If the leader is gone but members remain,
    they are our orphans: a PID in use as a process group id is never handed to a new process.
    """
    groups = _live_groups({int(pid) for pid, module, cert in procs if pid
                           and not ((_stat(pid) or ("Z", 0))[1] == int(pid) and _alive(pid)
                                    and not _ours(pid, module, cert))})
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 10.0)):
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait_s
        while True:
            _reap()
            groups = _live_groups(groups)
            if not groups:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    raise DeployError(f"processes {sorted(groups)} survived SIGKILL; stop them by hand (kill -9 -- -PGID)")


def _resource_dir(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / "resources" / name


def _load(rdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((rdir / "processes.json").read_text())
    except (OSError, ValueError):
        return None


def _save(rdir: Path, record: dict[str, Any]) -> None:
    tmp = rdir / "processes.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, rdir / "processes.json")


def _recorded(state: dict[str, Any] | None, record: dict[str, Any] | None) -> list[tuple[int, str, str]]:
    """Every ``(pid, module, cert)`` that a state or a processes.json names."""
    out: list[tuple[int, str, str]] = []
    for src, sched, workers in ((state, "scheduler_pid", "worker_pids"), (record, "scheduler", "workers")):
        if not src or not src.get("tls"):
            continue
        tls = src["tls"]
        if src.get(sched):
            pid = src[sched]["pid"] if isinstance(src[sched], dict) else src[sched]
            out.append((int(pid), SCHEDULER_MODULE, tls["scheduler_cert"]))
        for w in src.get(workers) or []:
            out.append((int(w["pid"] if isinstance(w, dict) else w), WORKER_MODULE, tls["worker_cert"]))
    return out


def _swept(tls: dict[str, str] | None) -> list[tuple[int, str, str]]:
    """Every live worker process whose command line carries this cluster's worker certificate.

    Workers the scheduler's scaler started are recorded nowhere else; so are the orphans of an interrupted deploy.
    """
    if not tls:
        return []
    cert = tls["worker_cert"]
    return [(int(e), WORKER_MODULE, cert) for e in os.listdir("/proc") if e.isdigit()
            and _ours(int(e), WORKER_MODULE, cert)]


def _spec(spec: dict) -> dict[str, Any]:
    """``spec`` with plain types (engines may hand numbers over as floats, env_vars as None)."""
    return {"workers": int(spec["workers"]), "threads_per_worker": int(spec["threads_per_worker"]),
            "memory_limit": str(spec["memory_limit"]), "autostop_mins": float(spec["autostop_mins"]),
            "min_workers": _int_or_none(spec.get("min_workers")), "max_workers": _int_or_none(spec.get("max_workers")),
            "env_vars": {str(k): str(v) for k, v in (spec.get("env_vars") or {}).items()},
            "env_name": str(spec.get("env_name") or "") or None,
            "env_packages": [str(p) for p in spec.get("env_packages") or ()],
            "env_setup": [str(c) for c in spec.get("env_setup") or ()],
            "scrub_env": sorted(str(k) for k in spec.get("scrub_env") or ())}


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _adaptive(spec: dict) -> bool:
    return spec.get("max_workers") is not None


#: settings the scheduler process itself runs with: changing one re-creates the cluster (new address)
SCHEDULER_SETTINGS = ("autostop_mins", "min_workers", "max_workers")


def _env(spec: dict, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The deploying environment minus the variables that carry secret values (``scrub_env``), plus ``extra``."""
    inherited = {k: v for k, v in os.environ.items() if k not in spec["scrub_env"]}
    return {**inherited, **(extra or {}), "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}


def _worker_python(spec: dict, state_dir: Path) -> str:
    """The interpreter the workers run: the Env's virtualenv (built now unless it exists), else this one."""
    if not spec["env_name"]:
        return sys.executable
    return str(ensure_env(Path(state_dir), spec["env_name"], spec["env_packages"], spec["env_setup"],
                          env=_env(spec)))


def _prune_unused_envs(state_dir: Path, old: dict | None, new: dict | None, python: str | None) -> None:
    """After a switch: delete the venvs of the old and the new Env that no process runs any more (best effort)."""
    new_env = (new or {}).get("env_name")
    for env_name in {n for n in ((old or {}).get("env_name"), new_env) if n}:
        keep = Path(python).parent.parent if env_name == new_env and python else None
        try:
            prune_envs(Path(state_dir), env_name, keep)
        except OSError:  # a venv that cannot be removed now is removed after the next switch
            pass


def _previous_ports(previous: dict | None) -> tuple[int, int]:
    """The scheduler and dashboard ports of the cluster's last incarnation (0, 0 if none)."""
    try:
        port = _host_port(previous["address"])[1] if previous and previous.get("address") else 0
        dashboard = int((previous or {}).get("dashboard_url", "").rsplit(":", 1)[1].split("/", 1)[0] or 0)
    except (ValueError, IndexError):
        return 0, 0
    return port, dashboard


def _start_scheduler_on(name: str, rdir: Path, tls: ClusterTLS, spec: dict, record: dict, timeout: float,
                        ports: tuple[int, int]) -> None:
    """Start the scheduler on the cluster's previous ports when they are free, so that an autostopped or
    re-created cluster keeps its address (and its RNS record stays as it was); else on new ones."""
    if ports[0]:
        try:
            return _start_scheduler(name, rdir, tls, spec, record, timeout, ports)
        except DeployError:
            if _alive(record["scheduler"]["pid"]):
                raise  # it started but does not answer: not a port clash
    _start_scheduler(name, rdir, tls, spec, record, timeout, (0, 0))


def _start_scheduler(name: str, rdir: Path, tls: ClusterTLS, spec: dict, record: dict, timeout: float,
                     ports: tuple[int, int] = (0, 0)) -> None:
    """Start the scheduler and wait for its scheduler file and port; fills ``record``."""
    sched_file, log = rdir / "scheduler.json", rdir / "logs" / "scheduler.log"
    sched_file.unlink(missing_ok=True)
    idle = None if spec["autostop_mins"] == -1 else max(1, round(spec["autostop_mins"] * 60))
    env, preload = _env(spec), ()
    if _adaptive(spec):
        env["RH_IAC_SCALER"], preload = str(_write_scaler_config(name, rdir, tls, spec, record)), (SCALER_MODULE,)
    argv = scheduler_argv(sys.executable, tls, HOST, ports[0], f"{HOST}:{ports[1]}", sched_file, idle, preload)
    pid = _spawn(argv, log, env, rdir)
    record["scheduler"] = {"pid": pid, "log": str(log)}
    _save(rdir, record)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap()
        if not _alive(pid):
            raise DeployError(f"Cluster {name!r}: the Dask scheduler exited while starting; {log}:\n{_log_tail(log)}")
        try:
            info = json.loads(sched_file.read_text())
        except (OSError, ValueError):
            info = None
        if info and _port_open(*_host_port(info["address"]), tls):
            record["address"] = info["address"]
            dashboard = info.get("services", {}).get("dashboard")
            record["dashboard_url"] = f"http://{HOST}:{dashboard}/status" if dashboard else ""
            _save(rdir, record)
            return
        time.sleep(0.05)
    raise DeployError(f"Cluster {name!r}: the Dask scheduler did not answer within {timeout:.0f} s; "
                      f"{log}:\n{_log_tail(log)}")


def _write_scaler_config(name: str, rdir: Path, tls: ClusterTLS, spec: dict, record: dict) -> Path:
    """What the scheduler's scaler (:mod:`runtime.local_scaler`) needs to start more workers like ours."""
    work = rdir / "work"
    work.mkdir(mode=0o700, exist_ok=True)
    argv = worker_argv(record.get("python", sys.executable), tls, "{address}", HOST, spec["threads_per_worker"],
                       spec["memory_limit"], "{name}", DEATH_TIMEOUT_S, work)
    config = {"min": spec["min_workers"] or 0, "max": spec["max_workers"], "interval": 1.0,
              "worker_argv": argv, "name_prefix": f"{name}-worker-a", "log_dir": str(rdir / "logs"),
              "cwd": str(rdir), "env": {**spec["env_vars"]}}
    path = rdir / "scaler.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=1)
    return path


def _start_workers(name: str, rdir: Path, tls: ClusterTLS, spec: dict, record: dict, count: int) -> list[dict]:
    """Start ``count`` workers at once (each a nanny in its own session), on the interpreter ``record['python']``
    (the Env's venv); they are added to ``record``."""
    started = []
    for _ in range(count):
        index = record["next_worker"]
        record["next_worker"] += 1  # names are never reused: a killed worker's name may still be registered
        wname, log, work = f"{name}-worker-{index}", rdir / "logs" / f"worker-{index}.log", rdir / "work"
        work.mkdir(mode=0o700, exist_ok=True)
        argv = worker_argv(record.get("python", sys.executable), tls, record["address"], HOST,
                           spec["threads_per_worker"], spec["memory_limit"], wname, DEATH_TIMEOUT_S, work)
        started.append({"pid": _spawn(argv, log, _env(spec, spec.get("env_vars")), rdir), "name": wname, "log": str(log)})
        record["workers"].append(started[-1])
        _save(rdir, record)
    return started


def _wait_workers(name: str, tls: ClusterTLS, record: dict, timeout: float) -> None:
    """Wait until the scheduler's workers are exactly ``record['workers']``; fail fast if one of them exits."""
    from distributed import Client

    expected = {w["name"]: w for w in record["workers"]}
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    try:
        with Client(record["address"], security=tls.security("client"), timeout=min(timeout, 30.0),
                    set_as_default=False) as client:
            while time.monotonic() < deadline:
                seen = {str(w.get("name")) for w in client.scheduler_info(n_workers=-1)["workers"].values()}
                if seen == set(expected):
                    return
                _reap()
                for w in expected.values():
                    if not _alive(w["pid"]):
                        raise DeployError(f"Cluster {name!r}: worker {w['name']} exited; "
                                          f"{w['log']}:\n{_log_tail(w['log'])}")
                time.sleep(0.1)
    except (OSError, TimeoutError) as exc:  # the scheduler stopped answering
        log = record["scheduler"]["log"]
        raise DeployError(f"Cluster {name!r}: lost the scheduler while waiting for workers ({exc}); "
                          f"{log}:\n{_log_tail(log)}") from exc
    missing = [w for n, w in expected.items() if n not in seen]
    tails = "\n".join(f"{w['log']}:\n{_log_tail(w['log'])}" for w in missing[:2])
    raise DeployError(f"Cluster {name!r}: {len(missing)} of {len(expected)} workers did not register within "
                      f"{timeout:.0f} s (the scheduler sees {len(seen)});\n{tails}")


def _state(record: dict, tls: ClusterTLS) -> dict[str, Any]:
    pids = [w["pid"] for w in record["workers"]]
    return {"scheduler_address": record["address"], "dashboard_url": record["dashboard_url"],
            "scheduler_pid": record["scheduler"]["pid"], "worker_pids": pids, "workers": len(pids),
            "tls": tls.to_dict()}


# --- the resource ------------------------------------------------------------------------------------------------
def create(name: str, spec: dict, state_dir: Path, stack: str, *, timeout: float = START_TIMEOUT_S) -> dict:
    """Start cluster ``name`` (scheduler, then ``spec['workers']`` workers) and return its state.

    The Env's virtualenv is built first; then leftovers recorded in processes.json are stopped. On any failure
    everything started is stopped and a :class:`DeployError` with the relevant log tail is raised.
    """
    rdir, spec = _resource_dir(state_dir, name), _spec(spec)
    python = _worker_python(spec, state_dir)
    previous = _load(rdir)
    _stop(_recorded(None, previous) + _swept((previous or {}).get("tls")))
    for d in (rdir, rdir / "logs"):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    tls = issue_cluster_tls(Path(state_dir), stack, name)
    record: dict[str, Any] = {"spec": spec, "python": python, "tls": tls.to_dict(), "scheduler": None,
                              "workers": [], "next_worker": 0}
    try:
        _start_scheduler_on(name, rdir, tls, spec, record, timeout, _previous_ports(previous))
        _start_workers(name, rdir, tls, spec, record, int(spec["workers"]))
        _wait_workers(name, tls, record, timeout)
    except BaseException:
        _stop(_recorded(None, record))
        raise
    _prune_unused_envs(state_dir, (previous or {}).get("spec"), spec, python)
    return _state(record, tls)


def _live_workers(state: dict, record: dict | None) -> list[int]:
    tls = state.get("tls") or {}
    pids = [int(p) for p in state.get("worker_pids") or []] + [w["pid"] for w in (record or {}).get("workers", [])]
    live = [p for p in dict.fromkeys(pids) if tls and _ours(p, WORKER_MODULE, tls["worker_cert"])]
    if record and _adaptive(record["spec"]):
        live = sorted(set(live) | {pid for pid, _, _ in _swept(tls)})
    return live


def _scheduler_up(state: dict) -> bool:
    tls, address, pid = state.get("tls"), state.get("scheduler_address"), int(state.get("scheduler_pid") or 0)
    return bool(tls and address and _ours(pid, SCHEDULER_MODULE, tls["scheduler_cert"])
                and _port_open(*_host_port(address), ClusterTLS.from_dict(tls)))


def read(name: str, state: dict, state_dir: Path) -> dict | None:
    """The cluster as it really is: None if the scheduler is gone, else ``state`` with only the live workers."""
    if not _scheduler_up(state):
        return None
    record = _load(_resource_dir(state_dir, name))
    live = _live_workers(state, record)
    if record and _adaptive(record["spec"]):  # the scheduler's scaler owns the count, within [min, max]
        return {**state, "scheduler_pid": int(state["scheduler_pid"]), "worker_pids": live,
                "workers": record["spec"]["workers"]}
    return {**state, "scheduler_pid": int(state["scheduler_pid"]), "worker_pids": live, "workers": len(live)}


def update(name: str, current: dict, spec: dict, state_dir: Path, stack: str, *,
           timeout: float = START_TIMEOUT_S) -> dict:
    """Converge cluster ``name`` on ``spec``.

    The Env's virtualenv is built first: if that fails, nothing running is touched. A dead scheduler or a new
    ``autostop_mins`` means a full re-create (new address). Otherwise the scheduler stays: a new
    ``threads_per_worker``/``memory_limit``/``env_vars`` or a new Env interpreter restarts every worker, a new
    ``workers`` starts the missing ones or stops the extra ones; then it waits until the scheduler sees exactly
    those. After a switch, the Env's venvs that no process runs any more are deleted.
    """
    rdir, spec, record = _resource_dir(state_dir, name), _spec(spec), _load(_resource_dir(state_dir, name))
    python = _worker_python(spec, state_dir)
    if (read(name, current, state_dir) is None or not record or not record.get("scheduler")
            or any(record["spec"].get(k) != spec[k] for k in SCHEDULER_SETTINGS)):
        _stop(_recorded(current, record))
        return create(name, spec, state_dir, stack, timeout=timeout)
    tls = ClusterTLS.from_dict(record["tls"])
    keep = [w for w in record["workers"] if _ours(w["pid"], WORKER_MODULE, tls.worker_cert)]
    if _workers_outdated(record, spec, python):
        keep = []
    keep = keep[:spec["workers"]]
    # stop the extra and replaced workers, and whatever a dead nanny left behind (its worker child)
    _stop([(w["pid"], WORKER_MODULE, tls.worker_cert) for w in record["workers"] if w not in keep])
    old_spec = record["spec"]
    record["workers"], record["spec"], record["python"] = keep, spec, python
    _save(rdir, record)
    started: list[dict] = []
    try:
        started = _start_workers(name, rdir, tls, spec, record, spec["workers"] - len(keep))
        _wait_workers(name, tls, record, timeout)
    except BaseException:
        _stop([(w["pid"], WORKER_MODULE, tls.worker_cert) for w in started])
        record["workers"] = [w for w in record["workers"] if w not in started]
        _save(rdir, record)
        raise
    _prune_unused_envs(state_dir, old_spec, spec, python)
    return _state(record, tls)


def _workers_outdated(record: dict, spec: dict, python: str) -> bool:
    """True if the running workers were started with other settings or another interpreter than ``spec`` needs."""
    return (record.get("python", sys.executable) != python
            or any(record["spec"].get(k) != spec.get(k) for k in ("threads_per_worker", "memory_limit", "env_vars")))


def delete(name: str, state: dict, state_dir: Path) -> None:
    """Stop every process of cluster ``name`` (from ``state`` and processes.json), wait until they are gone and the
    scheduler port is closed, then remove its resource directory and the venvs of its Env that no process runs any
    more. Deleting a cluster that is gone is a no-op."""
    rdir = _resource_dir(state_dir, name)
    record = _load(rdir)
    _stop(_recorded(state, record) + _swept((state or {}).get("tls") or (record or {}).get("tls")))
    addresses = {a for a in ((state or {}).get("scheduler_address"), (record or {}).get("address")) if a}
    deadline = time.monotonic() + 5.0
    while any(_port_open(*_host_port(a), timeout=0.2) for a in addresses) and time.monotonic() < deadline:
        time.sleep(0.05)
    shutil.rmtree(rdir, ignore_errors=True)
    _prune_unused_envs(state_dir, (record or {}).get("spec"), None, None)


def health(name: str, state: dict, state_dir: Path | None = None) -> dict[str, Any]:
    """A live view for ``status``: scheduler up/down, live and expected workers, address and dashboard URL.

    ``workers_expected`` is the applied spec's count when ``state_dir`` is given, else ``state['workers']``.
    """
    record = _load(_resource_dir(state_dir, name)) if state_dir is not None else None
    spec = (record or {}).get("spec", {})
    expected = spec.get("workers", state.get("workers", len(state.get("worker_pids") or [])))
    return {"scheduler": "up" if _scheduler_up(state) else "down",
            "workers_alive": len(_live_workers(state, record)), "workers_expected": int(expected),
            "adaptive": (spec.get("min_workers") or 0, spec["max_workers"]) if _adaptive(spec) else None,
            "address": state.get("scheduler_address"), "dashboard_url": state.get("dashboard_url")}
