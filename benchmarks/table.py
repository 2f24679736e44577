"""Table write+read of 5 million rows through rh_iac vs raw pyarrow parquet on the same local filesystem.

    python -m benchmarks.table [--rows N] [--repeat 3]

Both sides write a pyarrow table (numeric and string columns made with numpy) and read it back as a pyarrow table;
the figure is the best of ``--repeat`` runs of each, and the ratio is rh_iac's throughput over raw pyarrow's
(goal: >= 0.9).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def make_data(rows: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(42)
    words = np.array([f"w{i:04d}" for i in range(1000)])
    return pa.table({
        "id": np.arange(rows, dtype="int64"),
        "x": rng.random(rows),
        "y": rng.normal(size=rows).astype("float32"),
        "n": rng.integers(0, 1_000_000, rows, dtype="int32"),
        "word": pa.array(words[rng.integers(0, len(words), rows)]),
    })


def main(argv: list[str] | None = None) -> float:
    import pyarrow.parquet as pq

    from rh_iac.model import Folder, Table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    data = make_data(args.rows)
    root = Path(tempfile.mkdtemp(prefix="rh-bench-table-"))
    try:
        folder = Folder("bench")
        folder.outputs["url"] = (root / "rh").as_uri()
        table = Table("t", folder=folder)
        raw_path = root / "raw.parquet"

        def raw() -> None:
            pq.write_table(data, raw_path)
            assert pq.read_table(raw_path).num_rows == args.rows

        def rh() -> None:
            table.write(data)
            assert table.fetch(as_="arrow").num_rows == args.rows

        best = {"raw pyarrow": float("inf"), "rh_iac Table": float("inf")}
        for _ in range(args.repeat):  # interleaved, so both see the same machine state
            for name, fn in (("raw pyarrow", raw), ("rh_iac Table", rh)):
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
        for name, seconds in best.items():
            print(f"{name:>13}: write+read {args.rows:,} rows in {seconds:.3f} s  ({args.rows / seconds / 1e6:.2f} M rows/s)")
        ratio = best["raw pyarrow"] / best["rh_iac Table"]
        print(f"throughput ratio rh_iac / raw pyarrow: {ratio:.2f}  (goal >= 0.9)")
        return ratio
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
