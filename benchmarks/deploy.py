"""Cold deploy of the local stack vs ``distributed.LocalCluster(n_workers=2)`` start-up, and the no-op redeploy.

    python -m benchmarks.deploy [--rounds 3]

Each round deploys the local stack into a fresh throwaway project (its own git repo and RH_IAC_HOME), redeploys it
unchanged, and destroys it; the raw baseline starts and closes a 2-worker LocalCluster in the same run. Medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _localcluster_start() -> float:
    from distributed import Client, LocalCluster

    start = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
    client = Client(cluster)
    client.wait_for_workers(2)
    elapsed = time.perf_counter() - start
    client.close()
    cluster.close()
    return elapsed


def _project(base: Path) -> Path:
    root = base / "project"
    (root / "stacks").mkdir(parents=True)
    shutil.copy(REPO / "stacks" / "local.py", root / "stacks" / "local.py")
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def _round() -> tuple[float, float, float]:
    from rh_iac import operations
    from rh_iac.project import Project

    with tempfile.TemporaryDirectory(prefix="rh-bench-") as tmp:
        os.environ["RH_IAC_HOME"] = str(Path(tmp) / "home")
        project = Project(_project(Path(tmp)))
        try:
            start = time.perf_counter()
            operations.deploy("local", project=project)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            result = operations.deploy("local", project=project)
            noop = time.perf_counter() - start
            assert not result.applied and result.rns_commit is None, "the redeploy was not a no-op"
        finally:
            start = time.perf_counter()
            operations.destroy("local", project=project)
            destroy = time.perf_counter() - start
    return cold, noop, destroy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    raw = [_localcluster_start() for _ in range(args.rounds)]
    rounds = [_round() for _ in range(args.rounds)]
    cold, noop, destroy = (statistics.median(x) for x in zip(*rounds))
    base = statistics.median(raw)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"local stack vs LocalCluster(n_workers=2), median of {args.rounds}")
    for column in ("measure", "seconds", "ratio to LocalCluster start"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    table.add_row("LocalCluster(n_workers=2) start", f"{base:.2f}", "1.00")
    table.add_row("cold deploy (synth, init, plan, apply, RNS commit)", f"{cold:.2f}", f"{cold / base:.2f}")
    table.add_row("no-op redeploy (refresh + plan, no commit)", f"{noop:.2f}", f"{noop / base:.2f}")
    table.add_row("destroy", f"{destroy:.2f}", f"{destroy / base:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
