"""Tables as parquet datasets on any fsspec filesystem: write, read, and hand to dask.

A deployed :class:`~rh_iac.model.Table` has a URL (``table.url``, e.g. ``file:///.../datasets/flights``): a directory
of parquet files, ``part-00000.parquet``, ``part-00001.parquet``..., or hive-style sub-directories when the table
declares ``partition_on``. ::

    from rh_iac.data import write_table, read_table, table_to_dask

    write_table(flights, df)                    # replaces the previous data only once the new data is complete
    read_table(flights, columns=["carrier"])    # pandas.DataFrame
    table_to_dask(flights)                      # dask.dataframe: under a distributed Client the workers read

A write goes into a hidden sibling directory first and is swapped into place when complete, so a failed write (data
pyarrow cannot convert, a full disk, an interrupted process) leaves the previous data intact. On a local Linux
filesystem the swap is a single atomic ``renameat2(RENAME_EXCHANGE)``, readers never see a missing table; elsewhere it
is two renames (a brief moment without data), and on object stores (s3, gs) a copy, which is not atomic.
"""

from __future__ import annotations

import errno
import os
import sys
import uuid
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import dask.dataframe
    import pandas
    import pyarrow

    from rh_iac.model import Table

__all__ = ["write_table", "read_table", "read_arrow", "table_to_dask", "ROWS_PER_FILE"]

#: Rows per parquet file: each file is one dask partition, so a table of a few hundred thousand rows is already
#: spread over several workers, while files stay large enough to read efficiently.
ROWS_PER_FILE = 100_000


def _fs_path(table: "Table"):
    from fsspec.core import url_to_fs

    url = table.url  # raises ResourceNotDeployedError when the table has no URL yet
    fs, path = url_to_fs(url, **(table.folder.storage_options or {}))
    return fs, path.rstrip("/"), url


def _to_arrow(df: Any, table: "Table") -> "pyarrow.Table":
    import pandas as pd
    import pyarrow as pa

    if isinstance(df, pa.Table):
        return df
    if isinstance(df, pd.DataFrame):
        index = df.index
        # A default RangeIndex is not stored (each file would otherwise claim the whole range); any other index is
        # stored as columns and restored on read.
        default_index = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1 and index.name is None
        return pa.Table.from_pandas(df, preserve_index=not default_index)
    raise TypeError(
        f"{table.label}: write_table expects a pandas.DataFrame or a pyarrow.Table, got {type(df).__name__}."
    )


def write_table(
    table: "Table",
    df: "pandas.DataFrame | pyarrow.Table",
    *,
    overwrite: bool = True,
    rows_per_file: int = ROWS_PER_FILE,
) -> None:
    """Write ``df`` as the table's parquet dataset, replacing its previous data only once the new data is complete.

    With ``overwrite=False`` an existing dataset raises :class:`FileExistsError`. If conversion or writing fails,
    the exception propagates (with a note saying nothing was replaced) and the previous data is left as it was.
    """
    if isinstance(rows_per_file, bool) or not isinstance(rows_per_file, int) or rows_per_file < 1:
        raise ValueError(f"{table.label}: rows_per_file must be a positive integer, got {rows_per_file!r}.")
    fs, path, url = _fs_path(table)
    if not overwrite and fs.exists(path):
        raise FileExistsError(f"{table.label} already has data at {url}; pass overwrite=True to replace it.")

    parent, base = path.rsplit("/", 1) if "/" in path else ("", path)
    tmp = f"{parent}/.{base}.rh-tmp-{uuid.uuid4().hex[:12]}"
    try:
        arrow = _to_arrow(df, table)
        fs.makedirs(parent or "/", exist_ok=True)
        _write_dataset(fs, tmp, arrow, list(table.partition_on), rows_per_file)
        _swap_into_place(fs, tmp, path)
    except BaseException as exc:
        _remove_quietly(fs, tmp)
        if isinstance(exc, Exception):
            exc.add_note(f"rh_iac: writing {table.label} to {url} failed; its previous data (if any) is unchanged.")
        raise


def _write_dataset(fs, root: str, arrow: "pyarrow.Table", partition_on: list[str], rows_per_file: int) -> None:
    import pyarrow.parquet as pq

    if partition_on:
        missing = [c for c in partition_on if c not in arrow.column_names]
        if missing:
            raise KeyError(f"partition_on names columns the data does not have: {missing}")
        import pyarrow.dataset as ds

        ds.write_dataset(
            arrow,
            root,
            format="parquet",
            filesystem=fs,
            partitioning=partition_on,
            partitioning_flavor="hive",
            basename_template="part-{i}.parquet",
            max_rows_per_file=rows_per_file,
            max_rows_per_group=rows_per_file,
            existing_data_behavior="error",
            preserve_order=True,
        )
        return
    fs.makedirs(root, exist_ok=True)
    n = arrow.num_rows
    # One file even for an empty table, so its schema is kept.
    for i, start in enumerate(range(0, max(n, 1), rows_per_file)):
        pq.write_table(arrow.slice(start, rows_per_file), f"{root}/part-{i:05d}.parquet", filesystem=fs)


def _swap_into_place(fs, tmp: str, path: str) -> None:
    from fsspec.implementations.local import LocalFileSystem

    local = isinstance(fs, LocalFileSystem)
    if not fs.exists(path):
        if local:
            os.rename(tmp, path)
        else:
            _move_tree(fs, tmp, path)
        return
    if local and _exchange(tmp, path):
        _remove_quietly(fs, tmp)  # tmp now holds the previous data
        return
    old = tmp.replace(".rh-tmp-", ".rh-old-")
    _move_tree(fs, path, old)
    try:
        _move_tree(fs, tmp, path)
    except BaseException:
        _move_tree(fs, old, path)
        raise
    _remove_quietly(fs, old)


def _move_tree(fs, src: str, dst: str) -> None:
    """Move a directory tree by its file list: on object stores ``fs.mv(recursive=True)`` can take a directory
    placeholder (left by ``makedirs``) for a file and fail copying it."""
    fs.invalidate_cache(src)
    files = [p for p, info in fs.find(src, detail=True).items() if info.get("type") != "directory"]
    if not files:
        fs.mv(src, dst, recursive=True)
        return
    fs.copy(files, [dst + p[len(src):] for p in files])
    fs.rm(src, recursive=True)
    fs.invalidate_cache(dst)


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two local paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):  # filesystem or kernel without it
        return False
    raise OSError(err, os.strerror(err), a, None, b)


def _remove_quietly(fs, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except Exception:  # noqa: BLE001 - a leftover hidden temp directory is harmless
        pass


def _require_data(fs, path: str, url: str, table: "Table") -> None:
    if not fs.exists(path):
        raise FileNotFoundError(
            f"{table.label} has no data at {url} yet; write it first with rh_iac.data.write_table({table.name}, df)."
        )


def read_arrow(table: "Table", columns: Sequence[str] | None = None) -> "pyarrow.Table":
    """The table's data as a ``pyarrow.Table`` (only ``columns`` if given)."""
    import pyarrow.parquet as pq

    fs, path, url = _fs_path(table)
    _require_data(fs, path, url, table)
    return pq.read_table(path, columns=list(columns) if columns is not None else None, filesystem=fs)


def read_table(table: "Table", columns: Sequence[str] | None = None) -> "pandas.DataFrame":
    """The table's data as a ``pandas.DataFrame``, with the dtypes and index it was written with."""
    return read_arrow(table, columns).to_pandas()


def table_to_dask(table: "Table", columns: Sequence[str] | None = None, **read_kwargs: Any) -> "dask.dataframe.DataFrame":
    """The table as a lazy ``dask.dataframe`` (one partition per file).

    Nothing is read here: computed under a ``distributed.Client`` the files are read by the workers, which must be
    able to reach the table's URL (true of the local stack; cloud workers get storage credentials from their env).
    """
    import dask.dataframe as dd

    fs, path, url = _fs_path(table)
    _require_data(fs, path, url, table)
    if table.folder.storage_options:
        read_kwargs.setdefault("storage_options", table.folder.storage_options)
    return dd.read_parquet(url, columns=list(columns) if columns is not None else None, **read_kwargs)
