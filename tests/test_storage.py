"""Folder and Blob on local, memory and s3 (moto's server on 127.0.0.1), copies between them, and their errors."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from rh_iac import Blob, Folder, Stack
from rh_iac import storage
from rh_iac.errors import (
    BucketNotFoundError,
    InvalidSpecError,
    StorageCopyError,
    StorageError,
    StorageExistsError,
    StoragePathNotFoundError,
)

try:
    from moto_server import moto_s3, s3_env  # noqa: F401 - fixtures (tests/ is on sys.path under pytest)
except ImportError:  # pragma: no cover
    from tests.moto_server import moto_s3, s3_env  # noqa: F401


def _uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def bucket(s3_env: str) -> str:
    import s3fs

    name = f"rh-{_uid()}"
    s3fs.S3FileSystem().mkdir(name)
    return name


@pytest.fixture(params=["local", "memory", "s3"])
def base_url(request, tmp_path: Path) -> str:
    """A fresh, empty location on each kind of storage."""
    if request.param == "local":
        yield f"file://{tmp_path}/store"
        return
    if request.param == "memory":
        url = f"memory://rh-test-{_uid()}"
        yield url
        import fsspec

        fs = fsspec.filesystem("memory")
        if fs.exists(url):
            fs.rm(url, recursive=True)
        return
    yield f"s3://{request.getfixturevalue('bucket')}/store"


def _tree(root: Path) -> Path:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.csv").write_text("x,y\n1,2\n")
    (root / "b.txt").write_bytes(b"bee")
    (root / "sub" / "c.csv").write_text("c")
    (root / "sub" / "deep" / "d.bin").write_bytes(os.urandom(3000))
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- folder operations on every storage ---------------------------------------------------------------------------
def test_folder_operations(base_url: str, tmp_path: Path):
    src = _tree(tmp_path / "src")
    folder = Folder("data", path=base_url)
    folder.mkdir()
    written = folder.put(str(src))
    assert sorted(written) == ["a.csv", "b.txt", "sub/c.csv", "sub/deep/d.bin"]
    assert folder.ls() == ["a.csv", "b.txt", "sub"]
    assert folder.ls("sub") == ["sub/c.csv", "sub/deep"]
    detail = {e["name"]: e for e in folder.ls(detail=True)}
    assert detail["b.txt"]["size"] == 3 and detail["b.txt"]["url"] == base_url + "/b.txt"
    assert folder.exists("sub/deep/d.bin") and not folder.exists("nope.csv")

    with folder.open("new/dir/e.txt", "wb") as f:
        f.write(b"written")
    with folder.open("new/dir/e.txt") as f:
        assert f.read() == b"written"
    folder.put(str(src / "b.txt"), "renamed.txt")
    folder.put(str(src / "b.txt"), "into/")
    assert folder.exists("renamed.txt") and folder.exists("into/b.txt")

    out = tmp_path / "out"
    folder.get("", str(out))
    got = _files(out)
    assert {k: got[k] for k in _files(src)} == _files(src)
    one = tmp_path / "one.csv"
    folder.get("sub/c.csv", str(one))
    assert one.read_text() == "c"

    with pytest.raises(StorageError, match="recursive=True"):
        folder.rm("sub")
    folder.rm("sub", recursive=True)
    folder.rm("a.csv")
    assert not folder.exists("sub") and not folder.exists("a.csv")
    assert "b.txt" in folder.ls()


def test_paths_cannot_leave_the_folder(tmp_path: Path):
    folder = Folder("data", path=f"file://{tmp_path}/f")
    with pytest.raises(ValueError, match="leaves the folder"):
        folder.ls("../..")


def test_missing_path_is_a_named_error(base_url: str, tmp_path: Path):
    folder = Folder("data", path=base_url)
    with folder.open("present.txt", "wb") as f:
        f.write(b"x")
    for call in (lambda: folder.ls("missing"), lambda: folder.open("missing.txt"),
                 lambda: folder.get("missing.txt", str(tmp_path / "m")), lambda: folder.rm("missing.txt")):
        with pytest.raises(StoragePathNotFoundError) as info:
            call()
        assert isinstance(info.value, FileNotFoundError)
        assert not isinstance(info.value, BucketNotFoundError)
        assert "Folder 'data'" in str(info.value) and base_url + "/missing" in str(info.value)


def test_wrong_bucket_is_a_named_error(s3_env: str, tmp_path: Path):
    folder = Folder("data", path=f"s3://no-such-bucket-{_uid()}/x")
    (tmp_path / "f.txt").write_text("x")
    calls = (folder.ls, folder.exists, folder.mkdir, lambda: folder.put(str(tmp_path / "f.txt")),
             lambda: folder.open("f.txt"), lambda: folder.open("f.txt", "wb"),
             lambda: Blob("b", folder=folder).write(b"x"), lambda: Blob("b", folder=folder).fetch())
    for call in calls:
        with pytest.raises(BucketNotFoundError, match="bucket 'no-such-bucket-.*' of s3://.* does not exist"):
            call()
    import s3fs

    assert not s3fs.S3FileSystem().exists(folder.url.split("/")[2])  # and no bucket was created on the way


def test_explicit_storage_options_reach_s3(moto_s3: str, monkeypatch: pytest.MonkeyPatch):
    """Without AWS_ENDPOINT_URL in the environment the folder's own storage_options name the endpoint."""
    import s3fs

    from moto_server import DUMMY_CREDENTIALS

    for key, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    options = {"client_kwargs": {"endpoint_url": moto_s3}}
    name = f"rh-{_uid()}"
    s3fs.S3FileSystem(**options).mkdir(name)
    folder = Folder("data", path=f"s3://{name}/opts", storage_options=options)
    Blob("b", folder=folder).write(b"via options")
    assert folder.ls() == ["b"]
    assert Blob("b", folder=folder).fetch() == b"via options"
    assert folder.spec() == {"path": f"s3://{name}/opts", "storage_options": options}


@pytest.mark.parametrize("options", [{"key": "AKIA"}, {"secret": "x"}, {"token": "x"},
                                     {"client_kwargs": {"aws_secret_access_key": "x"}},
                                     {"client_kwargs": {"aws_access_key_id": "x"}}, {"password": "x"}])
def test_credentials_in_storage_options_are_refused(options):
    with pytest.raises(InvalidSpecError, match="Folder 'data'.*environment.*Secret"):
        Folder("data", path="s3://b/x", storage_options=options)


def test_storage_options_are_recorded_only_when_given():
    assert Folder("data", path="s3://b/x").spec() == {"path": "s3://b/x"}
    assert Folder("data", path="s3://b/x", storage_options={"anon": True}).spec()["storage_options"] == {"anon": True}


# --- copies between storages -------------------------------------------------------------------------------------
def test_to_local_to_s3_and_back_with_globs(bucket: str, tmp_path: Path):
    src = _tree(tmp_path / "src")
    local = Folder("data", path=f"file://{src}")
    on_s3 = local.to(f"s3://{bucket}/copy")
    assert isinstance(on_s3, Folder) and on_s3.url == f"s3://{bucket}/copy" and on_s3.name == "data"
    assert on_s3.ls() == ["a.csv", "b.txt", "sub"]
    assert storage.is_complete(on_s3)
    import s3fs

    assert s3fs.S3FileSystem().exists(f"{bucket}/copy/{storage.MARKER}")  # written, but hidden from ls

    back = on_s3.to(f"file://{tmp_path}/back")
    assert _files(tmp_path / "back") == _files(src)
    assert back.ls() == ["a.csv", "b.txt", "sub"]  # the marker is not copied

    csv_only = local.to(f"s3://{bucket}/csv", pattern="**/*.csv")
    import fsspec

    fs = fsspec.filesystem("s3")
    assert sorted(p.split("/csv/", 1)[1] for p in fs.find(f"{bucket}/csv")) == ["_RH_IAC_COMPLETE", "a.csv",
                                                                                 "sub/c.csv"]
    top = csv_only.to(f"file://{tmp_path}/top", pattern="*.csv")
    assert _files(tmp_path / "top") == {"a.csv": b"x,y\n1,2\n"}
    sub = on_s3.to(f"file://{tmp_path}/sub", pattern="sub")
    assert set(_files(tmp_path / "sub")) == {"sub/c.csv", "sub/deep/d.bin"}
    with pytest.raises(StoragePathNotFoundError, match="matches nothing"):
        local.to(f"s3://{bucket}/none", pattern="*.parquet")
    assert top.url.startswith("file://")


def test_to_memory_and_s3_to_s3(bucket: str, tmp_path: Path):
    src = _tree(tmp_path / "src")
    mem = Folder("data", path=f"file://{src}").to(f"memory://rh-{_uid()}")
    assert mem.ls("sub") == ["sub/c.csv", "sub/deep"]
    on_s3 = mem.to(f"s3://{bucket}/m")
    again = on_s3.to(f"s3://{bucket}/m2")
    again.get("", str(tmp_path / "out"))
    assert _files(tmp_path / "out") == _files(src)


def test_to_refuses_a_destination_with_data_unless_overwrite(tmp_path: Path, bucket: str):
    src = _tree(tmp_path / "src")
    local = Folder("data", path=f"file://{src}")
    for dest in (f"file://{tmp_path}/dst", f"s3://{bucket}/dst"):
        first = local.to(dest)
        first.rm("a.csv")
        with first.open("stale.txt", "wb") as f:
            f.write(b"old")
        with pytest.raises(StorageExistsError, match="overwrite=True"):
            local.to(dest)
        replaced = local.to(dest, overwrite=True)
        assert replaced.ls() == ["a.csv", "b.txt", "sub"], dest  # the stale file of the old contents is gone
    with pytest.raises(ValueError, match="into itself"):
        local.to(f"file://{src}/inner")


def test_to_inside_a_stack_is_not_a_declaration(tmp_path: Path):
    src = _tree(tmp_path / "src")
    with Stack("s") as stack:
        f = Folder("data", path=f"file://{src}")
        copy = f.to(f"file://{tmp_path}/c")
    assert copy is not f and list(stack) == [f]


def _fail_on(monkeypatch: pytest.MonkeyPatch, fs_cls: type, method: str, needle: str) -> None:
    original = getattr(fs_cls, method)

    def failing(self, *args, **kwargs):
        if any(needle in str(a) for a in args):
            raise OSError(f"injected failure on {needle}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(fs_cls, method, failing)


def test_copy_failing_midway_leaves_nothing_complete_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import shutil

    src = _tree(tmp_path / "src")
    original = shutil.copyfile

    def copyfile(a, b, *args, **kwargs):
        if str(a).endswith("d.bin"):
            raise OSError("disk full (injected)")
        return original(a, b, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    with pytest.raises(StorageCopyError, match="Folder 'data'.*disk full"):
        Folder("data", path=f"file://{src}").to(f"file://{tmp_path}/dst")
    assert not (tmp_path / "dst").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no hidden staging directory left either

    monkeypatch.setattr(shutil, "copyfile", original)
    good = Folder("data", path=f"file://{src}").to(f"file://{tmp_path}/dst")
    assert _files(tmp_path / "dst") == _files(src)
    monkeypatch.setattr(shutil, "copyfile", copyfile)
    with pytest.raises(StorageCopyError):
        Folder("data", path=f"file://{src}").to(good, overwrite=True)
    assert _files(tmp_path / "dst") == _files(src)  # a failed overwrite leaves the previous copy intact


def test_copy_failing_midway_leaves_no_complete_looking_s3_folder(bucket: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    import s3fs

    src = _tree(tmp_path / "src")
    _fail_on(monkeypatch, s3fs.S3FileSystem, "_put_file", "d.bin")
    with pytest.raises(StorageCopyError, match="injected failure"):
        Folder("data", path=f"file://{src}").to(f"s3://{bucket}/dst")
    dst = Folder("data", path=f"s3://{bucket}/dst")
    assert not storage.is_complete(dst)
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    assert not fs.exists(f"{bucket}/dst/{storage.MARKER}")
    assert fs.find(f"{bucket}/dst") == []  # the destination was empty: what was written is removed

    # over existing data: the marker goes first, so the half-replaced folder does not look complete
    monkeypatch.undo()
    Folder("data", path=f"file://{src}").to(dst)
    assert storage.is_complete(dst)
    _fail_on(monkeypatch, s3fs.S3FileSystem, "_put_file", "d.bin")
    with pytest.raises(StorageCopyError):
        Folder("data", path=f"file://{src}").to(dst, overwrite=True)
    assert not storage.is_complete(dst)
    with pytest.raises(StorageCopyError, match="unfinished copy"):
        dst.to(f"file://{tmp_path}/from-partial")
    assert not (tmp_path / "from-partial").exists()


def test_progress_bar_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    src = _tree(tmp_path / "src")
    Folder("data", path=f"file://{src}").to(f"file://{tmp_path}/quiet")
    assert capsys.readouterr().err == ""
    Folder("data", path=f"file://{src}").to(f"file://{tmp_path}/loud", progress=True)
    err = capsys.readouterr().err
    assert "src ->" in err, err  # the bar names the copy; the quiet run above printed nothing


# --- blobs ----------------------------------------------------------------------------------------------------------
def test_blob_write_fetch_rm_to(base_url: str, tmp_path: Path, bucket: str):
    folder = Folder("data", path=base_url)
    raw, obj = Blob("raw", folder=folder), Blob("obj", folder=folder)
    assert raw.url == base_url + "/raw"
    raw.write(b"\x00bytes")
    obj.write({"a": [1, 2], "b": (3.5, None)})
    assert raw.fetch() == b"\x00bytes"
    assert obj.fetch() == {"a": [1, 2], "b": (3.5, None)}
    with folder.open("raw") as f:
        assert f.read() == b"\x00bytes"  # bytes are stored raw, readable by anything
    assert sorted(folder.ls()) == ["obj.pickle", "raw"]
    obj.write(b"now bytes")
    assert obj.fetch() == b"now bytes" and sorted(folder.ls()) == ["obj", "raw"]

    elsewhere = raw.to(f"s3://{bucket}/blobs")
    assert elsewhere.folder.url == f"s3://{bucket}/blobs" and elsewhere.fetch() == b"\x00bytes"
    obj.write([1, "two"])
    local_copy = obj.to(f"file://{tmp_path}/blobs")
    assert local_copy.fetch() == [1, "two"]

    raw.rm()
    assert not raw.exists()
    with pytest.raises(StoragePathNotFoundError, match="Blob 'raw'.*write it first"):
        raw.fetch()
    with pytest.raises(StoragePathNotFoundError):
        raw.rm()
    raw.rm(missing_ok=True)


def test_blob_refuses_unpicklable_values(tmp_path: Path):
    blob = Blob("b", folder=Folder("data", path=f"file://{tmp_path}"))
    with pytest.raises(StorageError, match="Blob 'b'.*cannot be pickled"):
        blob.write(lambda: 1)
    assert not blob.exists()


# --- a table on s3 ------------------------------------------------------------------------------------------------
def test_table_on_s3_round_trips_with_dtypes(bucket: str):
    import pandas as pd

    from rh_iac import Table
    from rh_iac.data import read_table, write_table

    folder = Folder("data", path=f"s3://{bucket}/tables")
    table = Table("t", folder=folder)
    df = pd.DataFrame({
        "i": pd.array([1, None, 3], dtype="Int64"),
        "f": [1.5, 2.5, float("nan")],
        "s": pd.array(["a", None, "c"], dtype="string"),
        "c": pd.Categorical(["x", "y", "x"]),
        "t": pd.to_datetime(["2024-01-01", "2024-01-02", None]).tz_localize("UTC"),
    })
    write_table(table, df)
    back = read_table(table)
    pd.testing.assert_frame_equal(back, df)
    assert folder.ls() == ["t"]
