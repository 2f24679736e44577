"""Tables as parquet datasets on any fsspec filesystem: write, read, and hand to dask.

A deployed :class:`~rh_iac.model.Table` has a URL (``table.url``, e.g. ``file:///.../datasets/flights``): a directory
of parquet files, ``part-00000.parquet``, ``part-00001.parquet``..., or hive-style sub-directories when the table
declares ``partition_on``. ::

    from rh_iac.data import write_table, read_table, table_to_dask

    write_table(flights, df)                    # pandas, pyarrow or dask; replaces the previous data once complete
    append_table(flights, more)                 # new part files, only if ``more`` has the table's schema
    read_table(flights, columns=["carrier"])    # pandas.DataFrame (read_arrow: pyarrow.Table)
    stream_table(flights, 10_000)               # pandas.DataFrames of at most 10,000 rows, bounded memory
    table_to_dask(flights)                      # dask.dataframe: under a distributed Client the workers read

The table's arrow schema (with its pandas metadata) is kept next to the data in ``_common_metadata``, so a reader in
another process gets the dtypes the table was written with (categoricals, nullable integers, tz-aware datetimes...),
even for an empty table or one grown by appends.

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
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import dask.dataframe
    import pandas
    import pyarrow

    from rh_iac.model import Table

__all__ = [
    "write_table", "append_table", "read_table", "read_arrow", "stream_table", "table_to_dask", "table_schema",
    "ROWS_PER_FILE", "SCHEMA_FILE",
]

#: Rows per parquet file: each file is one dask partition, so a table of a few hundred thousand rows is already
#: spread over several workers, while files stay large enough to read efficiently.
ROWS_PER_FILE = 100_000
#: ...but a large table is not cut into more than this many files per write: past that, per-file and per-row-group
#: overhead costs more than the extra parallelism brings (row groups follow pyarrow's default cap of 1Mi rows).
MAX_FILES_PER_WRITE = 8
_MAX_ROW_GROUP = 1 << 20

#: The file, inside the table's directory, holding its arrow schema with pandas metadata (no rows). Readers skip
#: files starting with ``_`` or ``.`` as data.
SCHEMA_FILE = "_common_metadata"


def _fs_path(table: "Table"):
    from fsspec.core import url_to_fs

    url = table.url  # raises ResourceNotDeployedError when the table has no URL yet
    fs, path = url_to_fs(url, **(table.folder.storage_options or {}))
    return fs, path.rstrip("/"), url


def _lineage(resource: Any, op: str, path: str | None = None) -> None:
    """Report this I/O to the current lineage run, if any (:func:`rh_iac.rns.lineage.record_io`)."""
    from rh_iac.rns.lineage import record_io

    record_io(resource, op, path)


def _is_dask(df: Any) -> bool:
    if not type(df).__module__.startswith("dask"):
        return False
    import dask.dataframe as dd

    return isinstance(df, dd.DataFrame)


def _to_arrow(df: Any, table: "Table", *, any_range_index: bool = False) -> "pyarrow.Table":
    import pandas as pd
    import pyarrow as pa

    if isinstance(df, pa.Table):
        return df
    if isinstance(df, pd.DataFrame):
        index = df.index
        # A default RangeIndex is not stored (each file would otherwise claim the whole range); any other index is
        # stored as columns and restored on read. An append drops any unnamed RangeIndex (``df.iloc[n:]``...).
        default_index = isinstance(index, pd.RangeIndex) and index.name is None and (
            any_range_index or (index.start == 0 and index.step == 1))
        return pa.Table.from_pandas(df, preserve_index=not default_index)
    raise TypeError(
        f"{table.label}: write_table expects a pandas.DataFrame, a pyarrow.Table or a dask.dataframe.DataFrame, "
        f"got {type(df).__name__}."
    )


def _check_rows_per_file(table: "Table", rows_per_file: object) -> None:
    if isinstance(rows_per_file, bool) or not isinstance(rows_per_file, int) or rows_per_file < 1:
        raise ValueError(f"{table.label}: rows_per_file must be a positive integer, got {rows_per_file!r}.")


def _sibling(path: str, kind: str) -> str:
    parent, base = path.rsplit("/", 1) if "/" in path else ("", path)
    return f"{parent}/.{base}.rh-{kind}-{uuid.uuid4().hex[:12]}"


def write_table(
    table: "Table",
    df: "pandas.DataFrame | pyarrow.Table | dask.dataframe.DataFrame",
    *,
    overwrite: bool = True,
    rows_per_file: int = ROWS_PER_FILE,
) -> None:
    """Write ``df`` as the table's parquet dataset, replacing its previous data only once the new data is complete.

    A dask dataframe is written partition by partition in parallel (on a cluster's workers under a distributed
    Client, which must reach the table's storage), one file per partition. With ``overwrite=False`` an existing
    dataset raises :class:`FileExistsError`. If conversion or writing fails, the exception propagates (with a note
    saying nothing was replaced) and the previous data is left as it was.
    """
    _check_rows_per_file(table, rows_per_file)
    fs, path, url = _fs_path(table)
    _lineage(table, "w")
    if not overwrite and fs.exists(path):
        raise FileExistsError(f"{table.label} already has data at {url}; pass overwrite=True to replace it.")
    _check_replaceable(fs, path, url, table)

    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    tmp = _sibling(path, "tmp")
    try:
        fs.makedirs(parent or "/", exist_ok=True)
        _write_any(fs, tmp, df, table, rows_per_file)
        _swap_into_place(fs, tmp, path)
    except BaseException as exc:
        _remove_quietly(fs, tmp)
        if isinstance(exc, Exception):
            exc.add_note(f"rh_iac: writing {table.label} to {url} failed; its previous data (if any) is unchanged.")
        raise


#: what a parquet dataset holds besides its data files; anything else at a table's URL is not the table's to replace
_DATASET_METADATA = (SCHEMA_FILE, "_metadata", "_SUCCESS")


def _check_replaceable(fs, path: str, url: str, table: "Table") -> None:
    """Refuse (:class:`~rh_iac.errors.NotATableError`) before anything is written when ``url`` holds something other
    than a parquet dataset: replacing a table swaps its whole directory out and deletes the old one, so a URL that
    points elsewhere (a hand-edited or pulled RNS record, a mistyped path) must never get that far."""
    if not fs.exists(path):
        return
    if not fs.isdir(path):
        others = [path]
    else:
        others = [f for f in fs.find(path)
                  if not _is_data_file(f[len(path):]) and f.rsplit("/", 1)[-1] not in _DATASET_METADATA]
    if others:
        from rh_iac.errors import NotATableError

        shown = ", ".join(o[len(path):].lstrip("/") or o for o in others[:3])
        raise NotATableError(
            f"{table.label}: {url} holds files that are not part of a parquet dataset ({shown}"
            f"{f', ... {len(others)} in all' if len(others) > 3 else ''}); rh_iac replaces a table's whole directory, "
            f"so it refuses to. If that URL is wrong, fix the table's folder (or its RNS record: `invoke rns.show "
            f"{table.name}`); if the data is yours to drop, move it away first."
        )


def _write_any(fs, root: str, df: Any, table: "Table", rows_per_file: int, *, basename: str = "part-{i}",
               start: int = 0, any_range_index: bool = False, expect: "pyarrow.Schema | None" = None
               ) -> "pyarrow.Schema":
    """Write ``df`` as a parquet dataset under ``root`` (a fresh directory) with its schema file; its schema.

    With ``expect`` the data's schema is checked against it before anything is written (pandas, arrow) or before the
    schema file is written (dask, whose schema is only known from its files)."""
    partition_on = list(table.partition_on)
    if _is_dask(df):
        schema = _write_dask(fs, root, df, table, basename=basename, start=start)
        if expect is not None:
            _check_schema(table, expect, schema)
    else:
        arrow = _to_arrow(df, table, any_range_index=any_range_index)
        schema = arrow.schema
        if expect is not None:
            _check_schema(table, expect, schema)
        _write_dataset(fs, root, arrow, partition_on, rows_per_file, basename=basename, start=start)
    _write_schema(fs, root, schema)
    return schema


def _write_schema(fs, root: str, schema: "pyarrow.Schema") -> None:
    import pyarrow.parquet as pq

    with fs.open(f"{root}/{SCHEMA_FILE}", "wb") as f:
        pq.write_metadata(schema, f)


def _write_dask(fs, root: str, ddf: Any, table: "Table", *, basename: str, start: int) -> "pyarrow.Schema":
    """``ddf.to_parquet`` into ``root``, in parallel; the schema of the written data (from a written file's footer,
    plus the partition columns from the dataframe's meta)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    partition_on = list(table.partition_on)
    missing = [c for c in partition_on if c not in ddf.columns]
    if missing:
        raise KeyError(f"partition_on names columns the data does not have: {missing}")
    write_index = ddf.index.name is not None  # a default (per-partition) RangeIndex means nothing: not stored
    pattern = basename + ".parquet"
    ddf.to_parquet(
        fs.unstrip_protocol(root),
        write_index=write_index,
        partition_on=partition_on or None,
        storage_options=table.folder.storage_options or None,
        name_function=_NameFunction(pattern, start),
        write_metadata_file=False,
    )
    fs.invalidate_cache(root)
    files = sorted(p for p in fs.find(root) if _is_data_file(p))
    if not files:
        raise RuntimeError("the dask dataframe wrote no parquet files")
    schema = pq.read_schema(files[0], filesystem=fs)
    if partition_on:
        meta_schema = pa.Schema.from_pandas(ddf._meta, preserve_index=write_index)
        for col in partition_on:
            if col not in schema.names:
                schema = schema.append(meta_schema.field(col))
        pandas_meta = meta_schema.metadata
        schema = schema.with_metadata(pandas_meta or schema.metadata)
    return schema


class _NameFunction:
    """``part-00003.parquet`` for partition 3 (picklable, unlike a lambda in some schedulers)."""

    def __init__(self, pattern: str, start: int) -> None:
        self.pattern, self.start = pattern, start

    def __call__(self, i: int) -> str:
        return self.pattern.format(i=f"{self.start + i:05d}")


def _is_data_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".parquet") and not name.startswith(("_", "."))


def _write_dataset(fs, root: str, arrow: "pyarrow.Table", partition_on: list[str], rows_per_file: int, *,
                   basename: str = "part-{i}", start: int = 0) -> None:
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
            basename_template=basename + ".parquet",
            max_rows_per_file=rows_per_file,
            max_rows_per_group=rows_per_file,
            existing_data_behavior="error",
            preserve_order=True,
        )
        return
    fs.makedirs(root, exist_ok=True)
    n = arrow.num_rows
    rows_per_file = max(rows_per_file, -(-n // MAX_FILES_PER_WRITE))
    # One file even for an empty table, so its schema is kept.
    offsets = list(range(0, max(n, 1), rows_per_file))

    def write(i: int) -> None:
        name = (basename + ".parquet").format(i=f"{start + i:05d}")
        pq.write_table(arrow.slice(offsets[i], rows_per_file), f"{root}/{name}", filesystem=fs,
                       row_group_size=min(rows_per_file, _MAX_ROW_GROUP))

    if len(offsets) == 1:
        write(0)
        return
    # Files are written in parallel (pyarrow releases the GIL while encoding); the first failure stops the rest.
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=min(len(offsets), os.cpu_count() or 1, 8)) as pool:
        futures = [pool.submit(write, i) for i in range(len(offsets))]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for fut in pending:
            fut.cancel()
        for fut in futures:
            if fut.done() and not fut.cancelled() and fut.exception() is not None:
                raise fut.exception()


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


def _data_files(fs, path: str) -> list[str]:
    fs.invalidate_cache(path)
    return sorted(p for p in fs.find(path) if _is_data_file(p[len(path):]) and "/." not in p[len(path):]
                  and "/_" not in p[len(path):])


def _stored_schema(fs, path: str) -> "pyarrow.Schema | None":
    """The schema kept in the table's schema file; for a table written before that file existed, its first file's."""
    import pyarrow.parquet as pq

    try:
        with fs.open(f"{path}/{SCHEMA_FILE}", "rb") as f:
            return pq.read_schema(f)
    except FileNotFoundError:
        files = _data_files(fs, path)
        return pq.read_schema(files[0], filesystem=fs) if files else None


def table_schema(table: "Table") -> "pyarrow.Schema":
    """The table's arrow schema, with the pandas metadata its dtypes are rebuilt from."""
    fs, path, url = _fs_path(table)
    _require_data(fs, path, url, table)
    schema = _stored_schema(fs, path)
    if schema is None:
        raise FileNotFoundError(f"{table.label} at {url} holds no parquet files.")
    return schema


def read_arrow(table: "Table", columns: Sequence[str] | None = None) -> "pyarrow.Table":
    """The table's data as a ``pyarrow.Table`` (only ``columns`` if given), with its stored schema."""
    import pyarrow.parquet as pq

    fs, path, url = _fs_path(table)
    _require_data(fs, path, url, table)
    _lineage(table, "r")
    cols = list(columns) if columns is not None else None
    if table.partition_on:
        return pq.read_table(path, columns=cols, filesystem=fs)
    return pq.read_table(path, columns=cols, filesystem=fs, schema=_stored_schema(fs, path))


def read_table(table: "Table", columns: Sequence[str] | None = None) -> "pandas.DataFrame":
    """The table's data as a ``pandas.DataFrame``, with the dtypes and index it was written with."""
    return read_arrow(table, columns).to_pandas()


def stream_table(table: "Table", batch_size: int, columns: Sequence[str] | None = None) -> "Iterator[pandas.DataFrame]":
    """The table as ``pandas.DataFrame`` batches of at most ``batch_size`` rows, in order, read as they are consumed
    (memory stays bounded by a few batches whatever the table's size)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{table.label}: batch_size must be a positive integer, got {batch_size!r}.")
    fs, path, url = _fs_path(table)
    _require_data(fs, path, url, table)
    _lineage(table, "r")
    schema = _stored_schema(fs, path)
    if table.partition_on:
        dataset = ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive")
    else:
        dataset = ds.dataset(_data_files(fs, path), filesystem=fs, format="parquet", schema=schema)
    metadata = schema.metadata if schema is not None else None
    for batch in dataset.to_batches(columns=list(columns) if columns is not None else None, batch_size=batch_size,
                                    batch_readahead=2, fragment_readahead=1):
        if batch.num_rows == 0:
            continue
        chunk = pa.Table.from_batches([batch])
        if metadata:
            chunk = chunk.replace_schema_metadata(metadata)
        yield chunk.to_pandas()


# --- append ---------------------------------------------------------------------------------------------------------
def _describe(schema: "pyarrow.Schema") -> dict[str, str]:
    """Column -> a comparable description: its arrow type (a dictionary's value type, not its index width) and the
    pandas dtype it is rebuilt as."""
    import json

    import pyarrow as pa

    pandas_types: dict[str, str] = {}
    raw = (schema.metadata or {}).get(b"pandas")
    if raw:
        try:
            for col in json.loads(raw).get("columns", []):
                name = col.get("field_name") or col.get("name")
                kind = col.get("pandas_type")
                pandas_types[str(name)] = "category" if kind == "categorical" else str(col.get("numpy_type"))
        except (ValueError, AttributeError):
            pass
    out = {}
    for field in schema:
        t = field.type
        arrow = f"dictionary<{t.value_type}, ordered={t.ordered}>" if pa.types.is_dictionary(t) else str(t)
        pandas = pandas_types.get(field.name)
        # large_string/string (and binary, list) differ in offsets only: the same values, cast on read
        arrow = arrow.replace("large_string", "string").replace("large_binary", "binary").replace("large_list", "list")
        out[field.name] = f"{arrow} (pandas {pandas})" if pandas else arrow
    return out


def _check_schema(table: "Table", stored: "pyarrow.Schema", incoming: "pyarrow.Schema") -> None:
    from rh_iac.errors import SchemaMismatchError

    before, after = _describe(stored), _describe(incoming)
    diffs = []
    for name, kind in before.items():
        if name not in after:
            diffs.append(f"{name!r}: missing from the appended data (the table has {kind})")
        elif after[name] != kind:
            diffs.append(f"{name!r}: the table has {kind}, the appended data {after[name]}")
    diffs += [f"{name!r}: not in the table (the appended data has {kind})" for name, kind in after.items()
              if name not in before]
    if not diffs and list(before) != list(after):
        diffs.append(f"column order: the table has {list(before)}, the appended data {list(after)}")
    if diffs:
        raise SchemaMismatchError(
            f"{table.label}: cannot append data whose schema differs from the table's: " + "; ".join(diffs)
            + ". Convert the data to the table's dtypes (e.g. df.astype({...}), see rh_iac.data.table_schema) "
              "or rewrite the whole table with write_table. Nothing was appended."
        )


def append_table(
    table: "Table",
    df: "pandas.DataFrame | pyarrow.Table | dask.dataframe.DataFrame",
    *,
    rows_per_file: int = ROWS_PER_FILE,
) -> None:
    """Add ``df``'s rows to the table as new part files, after checking its schema equals the table's (column names,
    types and pandas dtypes): otherwise :class:`~rh_iac.errors.SchemaMismatchError` naming the table and columns.

    The new files are written under a hidden temporary directory and renamed into the table only once all are
    written, so a failed append leaves the table as it was. A table with no data yet is simply written.
    """
    _check_rows_per_file(table, rows_per_file)
    fs, path, url = _fs_path(table)
    _lineage(table, "w")
    if not fs.exists(path):
        write_table(table, df, rows_per_file=rows_per_file)
        return
    stored = _stored_schema(fs, path)
    existing = _data_files(fs, path)
    if table.partition_on:
        basename, start = f"part-{uuid.uuid4().hex[:12]}-{{i}}", 0
    else:
        basename, start = "part-{i}", _next_index(existing, path)
    tmp = _sibling(path, "append")
    moved: list[str] = []
    try:
        _write_any(fs, tmp, df, table, rows_per_file, basename=basename, start=start, any_range_index=True,
                   expect=stored)
        new = _data_files(fs, tmp)
        clash = [p for p in new if fs.exists(path + p[len(tmp):])]
        if clash:  # another writer appended concurrently
            raise FileExistsError(f"{table.label}: {clash[0][len(tmp) + 1:]} appeared in the table during the append")
        local = _is_local(fs)
        for src in new:
            dst = path + src[len(tmp):]
            if local:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.rename(src, dst)
            else:
                fs.mv(src, dst)
            moved.append(dst)
        fs.invalidate_cache(path)
    except BaseException as exc:
        for dst in moved:  # a rename failing midway: take back the files already moved
            try:
                fs.rm(dst)
            except Exception:  # noqa: BLE001
                pass
        if isinstance(exc, Exception) and not _is_schema_error(exc):
            exc.add_note(f"rh_iac: appending to {table.label} at {url} failed; the table is unchanged.")
        raise
    finally:
        _remove_quietly(fs, tmp)


def _is_schema_error(exc: BaseException) -> bool:
    from rh_iac.errors import SchemaMismatchError

    return isinstance(exc, SchemaMismatchError)


def _is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _next_index(files: list[str], path: str) -> int:
    import re

    numbers = [int(m.group(1)) for p in files if (m := re.fullmatch(r"part-(\d+)\.parquet", p.rsplit("/", 1)[-1]))]
    return max(numbers, default=-1) + 1


# --- dask ------------------------------------------------------------------------------------------------------------
class _ReadPart:
    """Reads one parquet file of a table into pandas, where it runs (a worker): the task holds the file's URL, the
    schema and the folder's (non-secret) storage options, never data. ``columns=`` lets dask project columns."""

    def __init__(self, schema: "pyarrow.Schema", storage_options: dict | None) -> None:
        self.schema, self.storage_options = schema, storage_options or {}

    def _columns(self, columns) -> list[str] | None:
        if columns is None:
            return None
        columns = [columns] if isinstance(columns, str) else list(columns)
        return columns + [c for c in _index_columns(self.schema) if c not in columns]

    def meta(self, columns=None):
        cols = self._columns(columns)
        empty = self.schema.empty_table()
        return (empty if cols is None else empty.select(cols)).to_pandas()

    def __call__(self, url: str, columns=None):
        import pyarrow.parquet as pq
        from fsspec.core import url_to_fs

        fs, path = url_to_fs(url, **self.storage_options)
        return pq.read_table(path, filesystem=fs, columns=self._columns(columns), schema=self.schema).to_pandas()


def _index_columns(schema: "pyarrow.Schema") -> list[str]:
    import json

    raw = (schema.metadata or {}).get(b"pandas")
    if not raw:
        return []
    return [c for c in json.loads(raw).get("index_columns", []) if isinstance(c, str) and c in schema.names]


def table_to_dask(table: "Table", columns: Sequence[str] | None = None, **read_kwargs: Any) -> "dask.dataframe.DataFrame":
    """The table as a lazy ``dask.dataframe`` (one partition per file).

    Nothing is read here but the file list and the schema file: computed under a ``distributed.Client`` each file is
    read by a worker, which must be able to reach the table's URL (true of the local stack; cloud workers get storage
    credentials from their env). Partitioned tables, or extra ``read_kwargs``, go through ``dd.read_parquet``.
    """
    import dask.dataframe as dd

    fs, path, url = _fs_path(table)
    _require_data(fs, path, url, table)
    _lineage(table, "r")
    schema = _stored_schema(fs, path)
    if table.partition_on or read_kwargs or schema is None:
        if table.folder.storage_options:
            read_kwargs.setdefault("storage_options", table.folder.storage_options)
        return dd.read_parquet(url, columns=list(columns) if columns is not None else None, **read_kwargs)
    reader = _ReadPart(schema, table.folder.storage_options)
    urls = [fs.unstrip_protocol(p) for p in _data_files(fs, path)]
    cols = list(columns) if columns is not None else None
    from dask.dataframe.utils import clear_known_categories

    ddf = dd.from_map(reader, urls, meta=clear_known_categories(reader.meta()), label=f"read-table-{table.name}", enforce_metadata=False)
    ddf = ddf if cols is None else ddf[cols]  # projected into the reads by dask's optimizer
    return ddf
