"""A Table on s3 (moto's server on 127.0.0.1) read by the cluster's workers, without the data passing the client."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pandas as pd
import pytest

from rh_iac import compute
from rh_iac.model import Folder, Table

try:
    from moto_server import DUMMY_CREDENTIALS, moto_s3, s3_env  # noqa: F401 - fixtures
except ImportError:  # pragma: no cover
    from tests.moto_server import DUMMY_CREDENTIALS, moto_s3, s3_env  # noqa: F401


def _set_env(values: dict) -> None:  # runs on each worker (a top-level function: it pickles by reference)
    import s3fs

    os.environ.update(values)
    s3fs.S3FileSystem.clear_instance_cache()


def _unset_env(names: list) -> None:
    for name in names:
        os.environ.pop(name, None)


def test_workers_read_an_s3_table_directly(s3_env, cluster, monkeypatch):
    import s3fs

    bucket = f"rh-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem().mkdir(bucket)
    folder = Folder("datasets", path=f"s3://{bucket}/data",
                    storage_options={"client_kwargs": {"endpoint_url": s3_env}})
    table = Table("trips", folder=folder)
    rng = np.random.default_rng(0)
    n = 60_000
    df = pd.DataFrame({"key": rng.integers(0, 7, n), "value": rng.random(n), "tag": [f"t{i % 5}" for i in range(n)]})
    table.write(df, rows_per_file=10_000)
    expected = df.groupby("key")["value"].sum().sort_index()

    # From here on the client process cannot read any s3 object but the table's schema file: a worker must.
    opened: list[str] = []

    def refuse(name):
        real = getattr(s3fs.S3FileSystem, name)

        def guarded(self, path, *args, **kwargs):
            opened.append(str(path))
            if not str(path).endswith("_common_metadata"):
                raise AssertionError(f"the client read {path} ({name})")
            return real(self, path, *args, **kwargs)

        monkeypatch.setattr(s3fs.S3FileSystem, name, guarded)

    for name in ("_open", "_cat_file", "_get_file", "_cat_ranges"):
        if hasattr(s3fs.S3FileSystem, name):
            refuse(name)
    with pytest.raises(AssertionError, match="the client read"):  # the guard works: fetching in the client fails
        table.fetch()
    opened.clear()

    client = compute.connect(cluster)
    client.run(_set_env, dict(DUMMY_CREDENTIALS))  # the workers' own credentials (dummies, which moto accepts)
    try:
        ddf = table.to_dask(columns=["key", "value"])
        assert ddf.npartitions == 6
        got = client.compute(ddf.groupby("key")["value"].sum()).result().sort_index()
        pd.testing.assert_series_equal(got, expected, check_exact=False, rtol=1e-12)
    finally:
        client.run(_unset_env, list(DUMMY_CREDENTIALS))
    assert opened and all(p.endswith("_common_metadata") for p in opened)  # the client read only the schema


def test_append_on_s3_and_schema_mismatch(s3_env):
    import s3fs

    from rh_iac.errors import SchemaMismatchError

    bucket = f"rh-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem().mkdir(bucket)
    table = Table("t", folder=Folder("d", path=f"s3://{bucket}/data"))
    df = pd.DataFrame({"a": np.arange(6), "b": pd.Categorical(list("xyzxyz"))})
    table.write(df.iloc[:3])
    table.append(df.iloc[3:])
    pd.testing.assert_frame_equal(table.fetch(), df)
    with pytest.raises(SchemaMismatchError, match=r"Table 't'.*'a'.*int64.*string"):
        table.append(df.assign(a=df["a"].astype(str)))
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{bucket}/data/t")) == [
        "_common_metadata", "part-00000.parquet", "part-00001.parquet"]
    assert [p for p in fs.ls(f"{bucket}/data") if "/." in p] == []  # no temporary directories left
    pd.testing.assert_frame_equal(pd.concat(list(table.stream(2)), ignore_index=True), df)
