"""rh_iac.function against raw distributed on the same deployed cluster, in one run.

    python -m benchmarks.compute [--calls 1000] [--items 10000]

Deploys the local stack (2 workers x 1 thread, mutual TLS) into a throwaway project, then measures:

a. one tiny call: ``function(f).to(cluster)(x)`` vs ``client.submit(f, x).result()`` (median; goal ratio <= 1.10)
b. ``.map`` over 10,000 tiny items vs ``client.map`` + ``gather`` with defaults (goal >= 10x faster)
c. ``.map`` over 200 items of 50 ms each vs ``client.map`` (goal ratio <= 1.05: batching must not hurt real work)
d. worker RSS after 10,000 calls vs after 1 call (goal: growth < 50 MB)

and destroys the stack. Raw and rh_iac runs alternate so that drift on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]


def tiny(x):
    return x + 1


def sleepy(x):
    time.sleep(0.05)
    return x


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


@contextmanager
def deployed_cluster() -> Iterator:
    """The local stack deployed in a temporary project; yields the loaded Cluster, destroys it afterwards."""
    from rh_iac import operations
    from rh_iac.project import Project
    from rh_iac.resolver import load

    with tempfile.TemporaryDirectory(prefix="rh-bench-") as tmp:
        root = Path(tmp) / "project"
        (root / "stacks").mkdir(parents=True)
        shutil.copy(REPO / "stacks" / "local.py", root / "stacks" / "local.py")
        shutil.copy(REPO / ".gitignore", root / ".gitignore")
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        os.environ["RH_IAC_HOME"] = str(Path(tmp) / "home")
        project = Project(root)
        operations.deploy("local", project=project)
        try:
            yield load("dev-cluster", project)
        finally:
            from rh_iac.compute import disconnect

            disconnect()
            operations.destroy("local", project=project)


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_call(client, remote, calls: int) -> tuple[float, float]:
    raw, ours = [], []
    for i in range(calls):
        raw.append(_time(lambda: client.submit(tiny, i, pure=False).result()))
        ours.append(_time(lambda: remote(i)))
    return statistics.median(raw), statistics.median(ours)


def bench_map_tiny(client, remote, items: int) -> tuple[float, float]:
    data = list(range(items))
    ours = _time(lambda: remote.map(data))
    raw = _time(lambda: client.gather(client.map(tiny, data, pure=False)))
    return raw, ours


def bench_map_sleepy(client, remote_sleepy) -> tuple[float, float]:
    data = list(range(200))
    raw = _time(lambda: client.gather(client.map(sleepy, data, pure=False)))
    ours = _time(lambda: remote_sleepy.map(data))
    return raw, ours


def bench_memory(client, remote, calls: int) -> tuple[int, int]:
    remote(0)
    after_one = max(client.run(_rss).values())
    window = []
    for i in range(calls):
        window.append(remote.submit(i))
        if len(window) >= 200:
            for future in window:
                future.result()
            window.clear()
    for future in window:
        future.result()
    after_many = max(client.run(_rss).values())
    return after_one, after_many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()

    import rh_iac

    with deployed_cluster() as cluster:
        client = cluster.client()
        remote, remote_sleepy = rh_iac.function(tiny).to(cluster), rh_iac.function(sleepy).to(cluster)
        remote(0), client.submit(tiny, 0, pure=False).result()  # warm both paths
        a_raw, a_ours = bench_call(client, remote, args.calls)
        b_raw, b_ours = bench_map_tiny(client, remote, args.items)
        c_raw, c_ours = bench_map_sleepy(client, remote_sleepy)
        d_one, d_many = bench_memory(client, remote, 10_000)

    from rich.console import Console
    from rich.table import Table

    table = Table(title="rh_iac.function vs raw distributed, same 2-worker TLS cluster")
    for column in ("benchmark", "raw distributed", "rh_iac", "ratio", "goal"):
        table.add_column(column, justify="left" if column == "benchmark" else "right")
    table.add_row(f"a. one tiny call (median of {args.calls})", f"{a_raw * 1e3:.2f} ms", f"{a_ours * 1e3:.2f} ms",
                  f"{a_ours / a_raw:.3f} (rh/raw)", "<= 1.10")
    table.add_row(f"b. map over {args.items:,} tiny items", f"{b_raw:.2f} s", f"{b_ours:.2f} s",
                  f"{b_raw / b_ours:.1f}x faster", ">= 10x")
    table.add_row("c. map over 200 items of 50 ms", f"{c_raw:.2f} s", f"{c_ours:.2f} s",
                  f"{c_ours / c_raw:.3f} (rh/raw)", "<= 1.05")
    table.add_row("d. worker RSS, 1 call -> 10,000 calls", f"{d_one / 2**20:.0f} MB", f"{d_many / 2**20:.0f} MB",
                  f"+{(d_many - d_one) / 2**20:.1f} MB", "< 50 MB")
    Console().print(table)


if __name__ == "__main__":
    main()
