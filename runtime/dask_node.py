"""Command lines that start a Dask scheduler or a Dask worker (with nanny) on a node, TLS only.

Both bind to an explicit host (the local provider passes ``127.0.0.1``), speak ``tls://`` with the cluster's
certificates, and stop by themselves when left alone: the scheduler after ``idle_timeout_s`` without work, a worker
``death_timeout_s`` after losing its scheduler. Workers never serve a dashboard (the scheduler's is enough).
"""

from __future__ import annotations

from pathlib import Path

from rh_iac.tls import ClusterTLS

SCHEDULER_MODULE = "distributed.cli.dask_scheduler"
WORKER_MODULE = "distributed.cli.dask_worker"


def scheduler_argv(
    python: str,
    tls: ClusterTLS,
    host: str,
    port: int,
    dashboard_address: str,
    scheduler_file: Path,
    idle_timeout_s: int | None,
    preload: tuple[str, ...] = (),
) -> list[str]:
    """argv of a TLS-only scheduler on ``host:port`` (0 = random) that writes its address to ``scheduler_file``.

    ``idle_timeout_s=None`` means the scheduler never stops by itself; ``preload`` names modules to load into it
    (e.g. ``runtime.local_scaler`` for adaptive scaling).
    """
    argv = [
        python, "-m", SCHEDULER_MODULE,
        "--protocol", "tls",
        "--host", host,
        "--port", str(port),
        *tls.cli_args("scheduler"),
        "--dashboard-address", dashboard_address,
        "--scheduler-file", str(scheduler_file),
        "--no-jupyter",
    ]
    if idle_timeout_s is not None:
        argv += ["--idle-timeout", f"{int(idle_timeout_s)}s"]
    for module in preload:
        argv += ["--preload", module]
    return argv


def worker_argv(
    python: str,
    tls: ClusterTLS,
    scheduler_address: str,
    host: str,
    nthreads: int,
    memory_limit: str,
    name: str,
    death_timeout_s: int,
    local_directory: Path,
) -> list[str]:
    """argv of one nanny-managed TLS worker named ``name`` that connects to ``scheduler_address``."""
    return [
        python, "-m", WORKER_MODULE, scheduler_address,
        "--protocol", "tls",
        "--host", host,
        *tls.cli_args("worker"),
        "--nanny",
        "--nworkers", "1",
        "--nthreads", str(int(nthreads)),
        "--memory-limit", str(memory_limit),
        "--name", name,
        "--death-timeout", str(int(death_timeout_s)),
        "--local-directory", str(local_directory),
        "--no-dashboard",
    ]
