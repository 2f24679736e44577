"""RNS at scale: load by name, history, save+commit with 100 / 1,000 / 10,000 records, vs the raw dependencies.

    python -m benchmarks.rns [--sizes 100,1000,10000] [--loads 300] [--saves 20]

For each size, a throwaway project gets that many folder records written as files and committed in ONE commit, plus
two records with 100 and 1,000 versions built with ``git fast-import`` (setup takes seconds, not minutes). Measured:

a. ``rh_iac.load(name)`` of random records (median, p95; goal < 5 ms median at 10,000) vs ``json.loads`` of the file
b. history of the 100- and 1,000-version records (``rh_iac.rns.history.history``; goal < 1 s at 1,000 versions) vs
   ``git log`` of the file in a subprocess
c. save+commit of one record (``GitRNS.write`` + ``GitRNS.commit``) vs writing the file and ``git add`` +
   ``git commit`` in subprocesses

Each line shows the ratio to its raw baseline in the same run, and each measure's scaling: its figure at the largest
size divided by its figure at the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

#: a fixed identity for the benchmark's throwaway repositories (set for this process only)
_GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@localhost", "GIT_CONFIG_NOSYSTEM": "1"}
HISTORY_VERSIONS = (100, 1000)


def _git(root: Path, *args: str, stdin: bytes | None = None) -> str:
    return subprocess.run(["git", *args], cwd=root, input=stdin, check=True, capture_output=True).stdout.decode()


def _record(name: str, version: int = 0) -> dict:
    """A deployed folder record, the shape deploys write."""
    return {"schema_version": 1, "name": name, "type": "folder", "provider": "local", "stack": "bench",
            "engine": "terraform", "spec": {"path": None, "storage_options": {}},
            "outputs": {"url": f"file://{{project}}/.rh_iac/bench/folders/{name}", "version": version},
            "status": "deployed"}


def _dump(record: dict) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def _fast_import_history(root: Path, name: str, versions: int) -> None:
    """``versions`` commits of ``rns/<name>.json`` on top of HEAD, in one ``git fast-import``; the work tree and
    index then match the new HEAD."""
    branch = _git(root, "symbolic-ref", "HEAD").strip()
    head = _git(root, "rev-parse", "HEAD").strip()
    chunks, stamp = [], 1_700_000_000
    for v in range(1, versions + 1):
        message = f"rns: deploy stack bench (version {v})".encode()
        data = _dump(_record(name, v))
        chunks += [f"commit {branch}\n".encode(),
                   f"committer bench <bench@localhost> {stamp + v} +0000\n".encode(),
                   f"data {len(message)}\n".encode(), message, b"\n",
                   (f"from {head}\n" if v == 1 else "").encode(),
                   f"M 100644 inline rns/{name}.json\n".encode(), f"data {len(data)}\n".encode(), data, b"\n"]
    _git(root, "fast-import", "--quiet", stdin=b"".join(chunks))
    (root / "rns" / f"{name}.json").write_bytes(_dump(_record(name, versions)))
    _git(root, "reset", "-q")  # the index follows the imported HEAD


def build_store(base: Path, size: int) -> Path:
    """A project with ``size`` records in one commit, and the history records; returns its root."""
    root = base / f"store-{size}"
    rns = root / "rns"
    rns.mkdir(parents=True)
    (root / "stacks").mkdir()
    for i in range(size):
        name = f"r{i:05d}"
        (rns / f"{name}.json").write_bytes(_dump(_record(name)))
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", f"{size} records")
    for versions in HISTORY_VERSIONS:
        _fast_import_history(root, f"hist-{versions}", versions)
    return root


def _times(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - start)
    return out


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[18] if len(samples) >= 20 else max(samples)


def measure(root: Path, size: int, loads: int, saves: int) -> dict[str, float]:
    """Every figure for one store, in seconds."""
    import rh_iac
    from rh_iac.project import Project
    from rh_iac.rns import GitRNS
    from rh_iac.rns.history import history

    os.environ["RH_IAC_PROJECT"] = str(root)
    rng = random.Random(size)
    names = [f"r{rng.randrange(size):05d}" for _ in range(loads)]
    assert rh_iac.load(names[0]).outputs["url"].startswith(root.as_uri()), "records did not load as deployed"
    rh_iac.load(names[1])  # warm: imports and caches are not the per-call cost
    load = _times(lambda i: rh_iac.load(names[i]), loads)
    raw_load = _times(lambda i: json.loads((root / "rns" / f"{names[i]}.json").read_bytes()), loads)

    figures = {"load_median": statistics.median(load), "load_p95": _p95(load),
               "raw_load_median": statistics.median(raw_load), "raw_load_p95": _p95(raw_load)}
    rns = Project(root).rns()
    assert isinstance(rns, GitRNS)
    for versions in HISTORY_VERSIONS:
        name = f"hist-{versions}"
        got = history(rns, name)
        assert len(got) == versions, f"history of {name}: {len(got)} versions, expected {versions}"
        figures[f"history_{versions}"] = statistics.median(_times(lambda i: history(rns, name), 3))
        figures[f"raw_history_{versions}"] = statistics.median(_times(
            lambda i: _git(root, "log", "--format=%H%x1f%an <%ae>%x1f%aI%x1f%B", "--", f"rns/{name}.json"), 3))

    def save(i: int) -> None:
        record = _record(f"r{i % size:05d}", 10_000 + i)
        rns.write(record)
        assert rns.commit(f"rns: bench save {i}")

    def raw_save(i: int) -> None:
        path = f"rns/r{(i + saves) % size:05d}.json"
        (root / path).write_bytes(_dump(_record(Path(path).stem, 20_000 + i)))
        _git(root, "add", "--", path)
        _git(root, "commit", "-q", "-m", f"raw save {i}", "--", path)

    save_times, raw_times = [], []
    for i in range(saves):  # alternate, so that drift on the machine hits both alike
        save_times += _times(lambda _: save(i), 1)
        raw_times += _times(lambda _: raw_save(i), 1)
    figures.update(save_median=statistics.median(save_times), save_p95=_p95(save_times),
                   raw_save_median=statistics.median(raw_times))
    return figures


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="store sizes, comma-separated")
    parser.add_argument("--loads", type=int, default=300, help="loads timed per size")
    parser.add_argument("--saves", type=int, default=20, help="save+commits timed per size")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    os.environ.update(_GIT_ENV)

    results, setup = {}, {}
    with tempfile.TemporaryDirectory(prefix="rh-bench-rns-") as tmp:
        for size in sizes:
            start = time.perf_counter()
            root = build_store(Path(tmp), size)
            setup[size] = time.perf_counter() - start
            results[size] = measure(root, size, args.loads, args.saves)

    from rich.console import Console
    from rich.table import Table

    rows = [("rh_iac.load(name), median", "load_median", "raw_load_median", "json.loads of the file", "< 5 ms"),
            ("rh_iac.load(name), p95", "load_p95", "raw_load_p95", "json.loads of the file", ""),
            *((f"history, {v:,} versions", f"history_{v}", f"raw_history_{v}", "git log of the file",
               "< 1 s" if v == 1000 else "") for v in HISTORY_VERSIONS),
            ("save+commit one record, median", "save_median", "raw_save_median", "git add + git commit", ""),
            ("save+commit one record, p95", "save_p95", "raw_save_median", "git add + git commit (median)", "")]
    low, high = sizes[0], sizes[-1]
    table = Table(title=f"RNS with {', '.join(f'{s:,}' for s in sizes)} records (ms; raw baseline in the same run)")
    table.add_column("measure")
    for size in sizes:
        table.add_column(f"{size:,} records", justify="right")
        table.add_column("x raw", justify="right")
    table.add_column(f"scaling {low:,}→{high:,}", justify="right")
    table.add_column("raw baseline")
    table.add_column("goal")
    for label, key, raw, raw_label, goal in rows:
        cells = []
        for size in sizes:
            cells += [_ms(results[size][key]), f"{results[size][key] / results[size][raw]:.1f}"]
        table.add_row(label, *cells, f"{results[high][key] / results[low][key]:.2f}x", raw_label, goal)
    console = Console(width=200)
    console.print(table)
    console.print("store setup: " + ", ".join(f"{s:,} records {t:.1f} s" for s, t in setup.items()))


if __name__ == "__main__":
    main()
