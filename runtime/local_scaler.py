"""Adaptive scaling of a cluster's workers on its own node, run inside the scheduler.

The scheduler is started with ``--preload runtime.local_scaler`` and ``RH_IAC_SCALER=<config.json>``::

    {"min": 0, "max": 4, "interval": 1.0, "worker_argv": [..., "{address}", "{name}", ...], "name_prefix": "c-a",
     "log_dir": "/path/logs", "cwd": "/path", "env": {...}}

Every ``interval`` seconds it asks the scheduler how many workers the current load wants
(:meth:`Scheduler.adaptive_target`, the same measure ``distributed.deploy.Adaptive`` uses), clamps it to
``[min, max]``, starts workers (detached processes of the same command line the deploy uses) or retires idle ones
gracefully. Scaling down waits for the same recommendation three times in a row, like Adaptive, so a short lull does
not churn workers. The scheduler records nothing: every worker process carries the cluster's certificate path on its
command line, which is how the local provider finds and stops them all on delete.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

_DOWNSCALE_WAIT = 3
_START_GRACE_S = 60.0


class LocalScaler(SchedulerPlugin):
    name = "rh_iac-local-scaler"

    def __init__(self, config: dict[str, Any]):
        self.min = int(config["min"])
        self.max = int(config["max"])
        self.interval = float(config.get("interval", 1.0))
        self.config = config
        self.pending: dict[str, float] = {}  # worker name -> start time, until it connects
        self.down_votes = 0
        self.counter = 0
        self.scheduler = None
        self._callback = None

    async def start(self, scheduler) -> None:
        from tornado.ioloop import PeriodicCallback

        self.scheduler = scheduler
        self._callback = PeriodicCallback(self.adapt, self.interval * 1000)
        self._callback.start()

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()

    def add_worker(self, scheduler, worker: str) -> None:
        self.pending.pop(scheduler.workers[worker].name, None)

    # --- the loop -------------------------------------------------------------------------------------------------
    def target(self) -> int:
        return max(self.min, min(self.max, self.scheduler.adaptive_target()))

    async def adapt(self) -> None:
        now = time.monotonic()
        self.pending = {n: t for n, t in self.pending.items() if now - t < _START_GRACE_S}
        connected = len(self.scheduler.workers)
        target = self.target()
        if target > connected + len(self.pending):
            self.down_votes = 0
            for _ in range(target - connected - len(self.pending)):
                self._spawn()
        elif target < connected and not self.pending:
            self.down_votes += 1
            if self.down_votes >= _DOWNSCALE_WAIT:
                self.down_votes = 0
                to_close = self.scheduler.workers_to_close(n=connected - target)
                if to_close:
                    await self.scheduler.retire_workers(workers=to_close, close_workers=True, remove=True)
        else:
            self.down_votes = 0

    def _spawn(self) -> None:
        self.counter += 1
        name = f"{self.config['name_prefix']}-{self.counter}"
        argv = [a.replace("{name}", name).replace("{address}", self.scheduler.address)
                for a in self.config["worker_argv"]]
        log = Path(self.config["log_dir"]) / f"{name}.log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
                             cwd=self.config["cwd"], env={**os.environ, **self.config.get("env", {})},
                             start_new_session=True, close_fds=True)
        finally:
            os.close(fd)
        self.pending[name] = time.monotonic()


async def dask_setup(scheduler) -> None:
    """Preload entry point: install the scaler when ``RH_IAC_SCALER`` names its configuration."""
    path = os.environ.get("RH_IAC_SCALER")
    if not path:
        return
    config = json.loads(Path(path).read_text())
    await scheduler.register_scheduler_plugin(LocalScaler(config), name=LocalScaler.name, idempotent=True)
