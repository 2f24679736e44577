"""Folder copy throughput vs raw fsspec on the same files, in one run.

    python -m benchmarks.storage [--mb 200] [--files 100] [--repeat 3]

Writes ``--files`` random files totalling ``--mb`` MB, then times (best of ``--repeat``, rh_iac and raw runs
alternating so drift on the machine hits both alike):

a. local -> local: ``Folder.to("file://...")`` vs ``fsspec.filesystem("file").put(src, dst, recursive=True)``
b. local -> s3 (a moto server this script starts on 127.0.0.1 and stops): ``Folder.to("s3://...")`` vs
   ``s3fs.S3FileSystem().put(src, dst, recursive=True)``

and prints each throughput ratio rh_iac / raw (goal >= 0.9).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from typing import Callable


def _best(fn: Callable[[], None], cleanup: Callable[[], None]) -> float:
    cleanup()
    t0 = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t0
    cleanup()
    return elapsed


def _make_files(root: str, total_mb: int, n: int) -> int:
    os.makedirs(root)
    size = total_mb * 2**20 // n
    block = os.urandom(size)
    for i in range(n):
        sub = os.path.join(root, f"d{i % 10}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i:04d}.bin"), "wb") as f:
            f.write(block[i:] + block[:i])
    return size * n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import fsspec

    from rh_iac import Folder
    from tests.moto_server import DUMMY_CREDENTIALS, running_moto_server

    work = tempfile.mkdtemp(prefix="rh-iac-bench-storage-")
    try:
        src = os.path.join(work, "src")
        nbytes = _make_files(src, args.mb, args.files)
        folder = Folder("bench", path=f"file://{src}")
        mb = nbytes / 2**20
        print(f"{args.files} files, {mb:.0f} MB; best of {args.repeat}")
        results: list[tuple[str, float, float]] = []

        # a. local -> local
        dst = os.path.join(work, "dst")
        local = fsspec.filesystem("file")
        clean = lambda: shutil.rmtree(dst, ignore_errors=True)  # noqa: E731
        ours, raw = [], []
        for _ in range(args.repeat):
            raw.append(_best(lambda: local.put(src + "/", dst, recursive=True), clean))
            ours.append(_best(lambda: folder.to(f"file://{dst}", progress=False), clean))
        results.append(("local -> local", min(ours), min(raw)))

        # b. local -> s3 (moto)
        with running_moto_server() as endpoint:
            os.environ.update(DUMMY_CREDENTIALS)
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()
            s3 = s3fs.S3FileSystem()
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            s3.mkdir(bucket)

            def clean_s3() -> None:
                s3.invalidate_cache()
                keys = s3.find(bucket)
                if keys:
                    s3.rm(keys)
                s3.invalidate_cache()

            ours, raw = [], []
            for _ in range(args.repeat):
                raw.append(_best(lambda: s3.put(src + "/", f"{bucket}/raw", recursive=True), clean_s3))
                ours.append(_best(lambda: folder.to(f"s3://{bucket}/ours", progress=False), clean_s3))
            results.append(("local -> s3 (moto)", min(ours), min(raw)))

        for name, t_ours, t_raw in results:
            ratio = t_raw / t_ours  # throughput ratio: rh_iac MB/s over raw MB/s
            verdict = "ok" if ratio >= 0.9 else "BELOW GOAL"
            print(f"{name:20s} rh_iac {mb / t_ours:8.1f} MB/s ({t_ours:.3f} s)   raw fsspec {mb / t_raw:8.1f} MB/s "
                  f"({t_raw:.3f} s)   ratio {ratio:.2f}  [{verdict}, goal >= 0.9]")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
