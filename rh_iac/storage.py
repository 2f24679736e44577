"""Folders and Blobs on any fsspec storage (file, memory, s3, gs): list, read, write, copy between systems.

Every function takes a :class:`~rh_iac.model.Folder` (or a :class:`~rh_iac.model.Blob`) whose URL is known — a
deployed folder's ``outputs['url']``, or a folder declared with a URL path such as ``s3://bucket/datasets``. Paths
are relative to the folder (``"raw/2024.csv"``) and may not climb out of it. The model's thin methods
(``folder.ls()``, ``folder.to("s3://...")``, ``blob.write(value)``...) call these. ::

    from rh_iac import Folder
    raw = Folder("raw", path="file:///data/raw")
    raw.put("./downloads")                          # a local directory's contents into the folder
    raw.ls()                                        # ['a.csv', 'b.csv', 'sub']
    on_s3 = raw.to("s3://team-bucket/raw", pattern="*.csv")   # a Folder pointing at the copy

Credentials and endpoints are never part of a Folder's spec: s3fs reads ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``, ``AWS_PROFILE`` (and gcsfs its
``GOOGLE_APPLICATION_CREDENTIALS``) from the environment. Non-secret options (``endpoint_url`` inside
``client_kwargs``, ``anon``, ``requester_pays``...) can be given as ``Folder(..., storage_options={...})``.

Errors are :class:`~rh_iac.errors.StorageError` subclasses naming the Folder, the URL and the fix: a missing path is
a :class:`~rh_iac.errors.StoragePathNotFoundError` (also a ``FileNotFoundError``), a bucket that does not exist a
:class:`~rh_iac.errors.BucketNotFoundError`.

**How a copy avoids looking complete when it is not** (:func:`copy_to`):

* Local destinations (``file://``): the files are copied into a hidden sibling directory
  (``.<name>.rh-tmp-<id>``) and renamed into place when every file is there. ``rename`` is atomic, so the destination
  either does not exist or is complete; a failed copy removes the hidden directory. With ``overwrite=True`` an
  existing destination is swapped out (an atomic exchange on Linux) and then removed.
* Object stores and every other filesystem (s3, gs, memory...): there is no rename (a "move" is a copy), so the files
  are written in place and a marker object ``_RH_IAC_COMPLETE`` (JSON: file count, bytes, time) is written **last**.
  Before the first byte is written any previous marker is removed, so a destination without the marker is
  incomplete: :func:`is_complete` says so, and copying from such a folder raises :class:`StorageCopyError`
  (unless ``allow_incomplete=True``). A failed copy into a destination that was empty removes what it wrote. The
  marker is hidden from :func:`ls` and never copied.

Copies of many files run concurrently (fsspec's batched async put/get for s3/gs, a thread pool otherwise), and show
a byte progress bar (rich) when stderr is a terminal and the copy is large, or when ``progress=True``.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import json
import os
import pickle
import posixpath
import shutil
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator

from rh_iac.errors import (
    BucketNotFoundError,
    StorageCopyError,
    StorageError,
    StorageExistsError,
    StoragePathNotFoundError,
)

if TYPE_CHECKING:  # pragma: no cover
    from fsspec import AbstractFileSystem

    from rh_iac.model import Blob, Folder

__all__ = [
    "MARKER", "PICKLE_SUFFIX", "filesystem", "ls", "exists", "put", "get", "open", "mkdir", "rm", "copy_to",
    "is_complete", "write_blob", "fetch_blob", "rm_blob", "blob_exists", "copy_blob",
]

#: Written last into an object-store destination of :func:`copy_to`; its absence means "incomplete".
MARKER = "_RH_IAC_COMPLETE"
#: A Blob holding a pickled value is stored at ``<blob url>.pickle``; raw bytes at ``<blob url>`` itself.
PICKLE_SUFFIX = ".pickle"
#: Copies at least this large show a progress bar when stderr is a terminal (``progress=None``).
PROGRESS_MIN_BYTES = 64 * 2**20
#: Threads for copies that are not done by an async filesystem's batch put/get.
DEFAULT_WORKERS = 16
_CHUNK = 8 * 2**20
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "az", "adl"})


# --- resolving a folder to a filesystem ----------------------------------------------------------------------------
def filesystem(folder: "Folder") -> "tuple[AbstractFileSystem, str, str]":
    """``(fs, root, url)`` of a folder: the fsspec filesystem, the folder's path on it, and its URL."""
    from fsspec.core import url_to_fs

    url = folder.url  # ResourceNotDeployedError when the folder has no URL yet
    options = dict(getattr(folder, "storage_options", None) or {})
    fs, root = url_to_fs(url, **options)
    root = root.rstrip("/") or "/"
    return fs, root, url


def _lineage(resource: Any, op: str, path: str | None = None) -> None:
    """Report this I/O to the current lineage run, if any (:func:`rh_iac.rns.lineage.record_io`)."""
    from rh_iac.rns.lineage import record_io

    record_io(resource, op, path)


def _protocol(fs: "AbstractFileSystem") -> str:
    proto = fs.protocol
    return proto[0] if isinstance(proto, (tuple, list)) else proto


def _is_local(fs: "AbstractFileSystem") -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _is_object_store(fs: "AbstractFileSystem") -> bool:
    return bool(set(fs.protocol if isinstance(fs.protocol, (tuple, list)) else [fs.protocol]) & _OBJECT_STORES)


def _join(root: str, path: str, what: str = "path") -> str:
    """``root/path`` for a path relative to the folder; a path that climbs out of the folder is refused."""
    if not isinstance(path, str):
        raise TypeError(f"{what} must be a string relative to the folder, got {type(path).__name__}.")
    rel = posixpath.normpath(path.replace("\\", "/").lstrip("/")) if path.strip("/") else ""
    if rel in (".", ""):
        return root
    if rel == ".." or rel.startswith("../"):
        raise ValueError(f"{what} {path!r} leaves the folder; give a path inside it.")
    return root.rstrip("/") + "/" + rel


def _rel(root: str, name: str) -> str:
    name = name.rstrip("/")
    prefix = root.rstrip("/") + "/"
    if name.startswith(prefix):
        return name[len(prefix):]
    return "" if name == root.rstrip("/") else name


def _url(url: str, rel: str) -> str:
    return url.rstrip("/") + ("/" + rel if rel else "")


def _is_marker(rel: str) -> bool:
    """Whether a path relative to a folder is one of the copy markers at its root."""
    return rel in (MARKER, MARKER + ".pending")


def _bucket_missing(fs: "AbstractFileSystem", root: str) -> str | None:
    """The bucket name if ``root`` is on an object store whose bucket does not exist, else None."""
    if not _is_object_store(fs):
        return None
    bucket = root.lstrip("/").split("/", 1)[0]
    try:
        fs.invalidate_cache(bucket)
        return None if fs.exists(bucket) else bucket
    except (PermissionError, OSError):
        return None  # cannot tell (no ListBucket right...): report the path instead


def _not_found(owner: str, fs: "AbstractFileSystem", root: str, url: str, target_url: str) -> StorageError:
    bucket = _bucket_missing(fs, root)
    if bucket is not None:
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        where = f" at endpoint {endpoint}" if endpoint and _protocol(fs) in ("s3", "s3a") else ""
        return BucketNotFoundError(
            f"{owner}: bucket {bucket!r} of {url} does not exist{where} (or these credentials cannot see it); "
            f"fix the folder's URL, create the bucket (deploy the stack that declares it), or check "
            f"AWS_ENDPOINT_URL / credentials."
        )
    return StoragePathNotFoundError(
        f"{owner}: {target_url} does not exist; list what the folder holds with .ls(), or write it first "
        f"(.put(local_path, ...), .open(path, 'wb'))."
    )


@contextmanager
def _mapped(owner: str, fs: "AbstractFileSystem", root: str, url: str, target_url: str) -> Iterator[None]:
    """Turn fsspec's bare FileNotFoundError into a StorageError naming the resource, the URL and the fix."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as exc:
        raise _not_found(owner, fs, root, url, target_url) from exc


def _require_bucket(owner: str, fs: "AbstractFileSystem", root: str, url: str) -> None:
    if _bucket_missing(fs, root) is not None:
        raise _not_found(owner, fs, root, url, url)


# --- folder operations --------------------------------------------------------------------------------------------
def ls(folder: "Folder", path: str = "", detail: bool = False) -> list[str] | list[dict[str, Any]]:
    """What ``path`` (a directory of the folder, default its root) holds, as paths relative to the folder, sorted.

    With ``detail=True`` each entry is fsspec's info dict (``type``, ``size``...) with ``name`` relative to the
    folder and ``url`` its full URL. The copy marker ``_RH_IAC_COMPLETE`` is not listed.
    """
    fs, root, url = filesystem(folder)
    target = _join(root, path)
    with _mapped(folder.label, fs, root, url, _url(url, _rel(root, target))):
        fs.invalidate_cache(target)
        entries = fs.ls(target, detail=True)
    out: list[dict[str, Any]] = []
    for entry in entries:
        rel = _rel(root, entry["name"])
        if rel == "" or _is_marker(rel):
            continue
        out.append({**entry, "name": rel, "url": _url(url, rel)})
    out.sort(key=lambda e: e["name"])
    return out if detail else [e["name"] for e in out]


def exists(folder: "Folder", path: str = "") -> bool:
    """Whether ``path`` exists in the folder (the folder itself by default).

    A folder on a bucket that does not exist raises :class:`BucketNotFoundError` rather than answering False, so a
    typo in a bucket name is not mistaken for an empty folder.
    """
    fs, root, url = filesystem(folder)
    target = _join(root, path)
    fs.invalidate_cache(target)
    if fs.exists(target):
        return True
    _require_bucket(folder.label, fs, root, url)
    return False


def mkdir(folder: "Folder", path: str = "") -> None:
    """Create ``path`` (and parents) in the folder; nothing to do if it exists. Never creates a bucket."""
    fs, root, url = filesystem(folder)
    _require_bucket(folder.label, fs, root, url)
    fs.makedirs(_join(root, path), exist_ok=True)


def rm(folder: "Folder", path: str = "", recursive: bool = False) -> None:
    """Remove ``path`` from the folder; a directory (or the whole folder, ``path=""``) needs ``recursive=True``."""
    fs, root, url = filesystem(folder)
    target = _join(root, path)
    target_url = _url(url, _rel(root, target))
    fs.invalidate_cache(target)
    if not fs.exists(target):
        raise _not_found(folder.label, fs, root, url, target_url)
    if fs.isdir(target) and not recursive:
        raise StorageError(f"{folder.label}: {target_url} is a directory; pass recursive=True to remove it.")
    with _mapped(folder.label, fs, root, url, target_url):
        fs.rm(target, recursive=recursive)
    fs.invalidate_cache(target)


def open(folder: "Folder", path: str, mode: str = "rb", **kwargs: Any) -> IO[Any]:  # noqa: A001 - mirrors fsspec
    """Open a file of the folder (``mode`` as for :func:`open`; writing creates missing parent directories)."""
    fs, root, url = filesystem(folder)
    target = _join(root, path)
    if target == root:
        raise ValueError(f"{folder.label}: open() needs a file path inside the folder, got {path!r}.")
    writing = any(c in mode for c in "wax+")
    _lineage(folder, "w" if writing else "r", path)
    if writing:
        _require_bucket(folder.label, fs, root, url)
        if not _is_object_store(fs):
            fs.makedirs(posixpath.dirname(target), exist_ok=True)
    with _mapped(folder.label, fs, root, url, _url(url, _rel(root, target))):
        return fs.open(target, mode, **kwargs)


def put(folder: "Folder", local_path: str | os.PathLike[str], remote_path: str = "", recursive: bool = True,
        *, progress: bool | None = None) -> list[str]:
    """Upload a local file or directory into the folder; returns the written paths, relative to the folder.

    A directory's *contents* go under ``remote_path`` (``recursive=False``: only its top-level files). A file goes to
    ``remote_path`` itself, or into it keeping its name when ``remote_path`` is empty or ends with ``/``.
    """
    local = os.fspath(local_path)
    if not os.path.exists(local):
        raise FileNotFoundError(f"{folder.label}: put() source {local!r} does not exist on this machine.")
    fs, root, url = filesystem(folder)
    _require_bucket(folder.label, fs, root, url)
    _lineage(folder, "w", remote_path or None)
    if os.path.isdir(local):
        pairs = [(p, rel) for p, rel, _ in _local_files(local, recursive)]
        base = remote_path.strip("/")
        rels = [posixpath.join(base, rel) if base else rel for _, rel in pairs]
    else:
        name = os.path.basename(local)
        rels = [posixpath.join(remote_path.strip("/"), name) if (not remote_path or remote_path.endswith("/"))
                else remote_path.strip("/")]
        pairs = [(local, rels[0])]
    from fsspec.implementations.local import LocalFileSystem

    sizes = [os.path.getsize(p) for p, _ in pairs]
    jobs = [(p, _join(root, r), s) for (p, _), r, s in zip(pairs, rels, sizes)]
    with _mapped(folder.label, fs, root, url, url), _progress(sum(sizes), progress, f"put {url}") as advance:
        _transfer(LocalFileSystem(), fs, jobs, advance)
    fs.invalidate_cache(root)
    return rels


def get(folder: "Folder", remote_path: str, local_path: str | os.PathLike[str], *,
        progress: bool | None = None) -> list[str]:
    """Download a file or directory of the folder to this machine; returns the local paths written.

    A directory's contents go into ``local_path`` (created). A file goes to ``local_path``, or into it keeping its
    name when ``local_path`` is an existing directory.
    """
    fs, root, url = filesystem(folder)
    target = _join(root, remote_path)
    target_url = _url(url, _rel(root, target))
    local = os.fspath(local_path)
    _lineage(folder, "r", remote_path or None)
    fs.invalidate_cache(target)
    with _mapped(folder.label, fs, root, url, target_url):
        if not fs.exists(target):
            raise FileNotFoundError(target)
        if fs.isdir(target):
            files = [f for f in _remote_files(fs, target) if not _is_marker(_rel(root, f[0]))]
            jobs = [(src, os.path.join(local, *rel.split("/")), size) for src, rel, size in files]
            os.makedirs(local, exist_ok=True)
        else:
            dest = os.path.join(local, posixpath.basename(target)) if os.path.isdir(local) else local
            jobs = [(target, dest, int(fs.info(target).get("size") or 0))]
        from fsspec.implementations.local import LocalFileSystem

        with _progress(sum(j[2] for j in jobs), progress, f"get {target_url}") as advance:
            _transfer(fs, LocalFileSystem(), jobs, advance)
    return [j[1] for j in jobs]


def is_complete(folder: "Folder") -> bool:
    """Whether the folder holds a finished copy: on local storage it exists (copies are renamed into place); elsewhere
    its ``_RH_IAC_COMPLETE`` marker exists, or it holds data and was not written by :func:`copy_to` at all."""
    fs, root, url = filesystem(folder)
    fs.invalidate_cache(root)
    if _is_local(fs):
        return fs.exists(root)
    if fs.exists(_join(root, MARKER)):
        return True
    return fs.exists(root) and not _copy_in_progress(fs, root)


def _copy_in_progress(fs: "AbstractFileSystem", root: str) -> bool:
    return fs.exists(_join(root, MARKER + ".pending"))


# --- copying between storages -------------------------------------------------------------------------------------
def copy_to(
    folder: "Folder",
    dest: "str | Folder",
    *,
    pattern: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    max_workers: int | None = None,
    allow_incomplete: bool = False,
) -> "Folder":
    """Copy the folder (recursively; only what ``pattern`` matches, e.g. ``"*.csv"`` or ``"**/*.parquet"``) to
    ``dest`` — a URL (``"s3://bucket/prefix"``, ``"file:///data/x"``, ``"memory://x"``) or another Folder — and return
    the Folder there (``dest`` itself, or a new free-standing Folder with this folder's name and storage options).

    The destination must be empty or absent unless ``overwrite=True`` (then its previous contents are replaced). A
    copy that fails raises :class:`StorageCopyError` and leaves no destination that looks complete (see the module
    docstring for how, per filesystem).
    """
    from fsspec.implementations.local import LocalFileSystem

    dest_folder = _dest_folder(folder, dest)
    src_fs, src_root, src_url = filesystem(folder)
    dst_fs, dst_root, dst_url = filesystem(dest_folder)
    if type(src_fs) is type(dst_fs) and src_fs.storage_options == dst_fs.storage_options and (
            dst_root == src_root or dst_root.startswith(src_root.rstrip("/") + "/")):
        raise ValueError(f"{folder.label}: cannot copy {src_url} into itself ({dst_url}); choose another destination.")

    src_fs.invalidate_cache(src_root)
    if not src_fs.exists(src_root):
        raise _not_found(folder.label, src_fs, src_root, src_url, src_url)
    if not allow_incomplete and not _is_local(src_fs) and _copy_in_progress(src_fs, src_root):
        raise StorageCopyError(
            f"{folder.label}: {src_url} is an unfinished copy (no {MARKER} marker); copy it again from its source, "
            f"or pass allow_incomplete=True."
        )
    files = _select(folder, src_fs, src_root, src_url, pattern)
    _require_bucket(dest_folder.label, dst_fs, dst_root, dst_url)
    dst_fs.invalidate_cache(dst_root)
    has_data = dst_fs.exists(dst_root) and (not dst_fs.isdir(dst_root) or bool(dst_fs.ls(dst_root)))
    if has_data and not overwrite:
        raise StorageExistsError(
            f"{dest_folder.label}: {dst_url} already holds data; pass overwrite=True to replace it, or copy to "
            f"an empty location."
        )
    total = sum(size for _, _, size in files)
    label = f"{src_url} -> {dst_url}"
    try:
        with _progress(total, progress, label) as advance:
            if _is_local(dst_fs):
                _copy_local_atomic(src_fs, dst_fs, dst_root, files, advance, max_workers, has_data)
            else:
                _copy_with_marker(src_fs, dst_fs, dst_root, files, advance, max_workers, has_data, src_url)
    except (StorageError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise StorageCopyError(
            f"{folder.label}: copying {label} failed ({type(exc).__name__}: {exc}); the destination was not "
            f"completed{' (no ' + MARKER + ' marker)' if not _is_local(dst_fs) else ''}: fix the cause and copy "
            f"again{' with overwrite=True' if not isinstance(dst_fs, LocalFileSystem) else ''}."
        ) from exc
    return dest_folder


def _dest_folder(folder: "Folder", dest: "str | Folder") -> "Folder":
    from rh_iac.model import Folder, _current_stack

    if isinstance(dest, Folder):
        return dest
    if not isinstance(dest, str) or not dest:
        raise TypeError(f"{folder.label}: .to() takes a destination URL or a Folder, got {dest!r}.")
    if "://" not in dest:
        dest = "file://" + os.path.abspath(os.path.expanduser(dest))
    same_protocol = dest.split("://", 1)[0] == folder.url.split("://", 1)[0] if "://" in folder.url else False
    options = getattr(folder, "storage_options", None) if same_protocol else None
    token = _current_stack.set(None)  # a copy made inside a `with Stack(...)` block is not a declaration
    try:
        return Folder(folder.name, path=dest, provider=folder._provider, storage_options=options)
    finally:
        _current_stack.reset(token)


def _select(folder: "Folder", fs: "AbstractFileSystem", root: str, url: str,
            pattern: str | None) -> list[tuple[str, str, int]]:
    """``(source path, path relative to the folder, size)`` of every file to copy."""
    if pattern is None:
        return [f for f in _remote_files(fs, root) if not _is_marker(f[1])]
    if not isinstance(pattern, str) or not pattern.strip("/"):
        raise ValueError(f"{folder.label}: pattern must be a glob relative to the folder, e.g. '*.csv'.")
    matches = fs.glob(_join(root, pattern, "pattern"), detail=True)
    out: dict[str, tuple[str, str, int]] = {}
    for name, info in matches.items():
        if info.get("type") == "directory":
            for f in _remote_files(fs, name):
                out[f[0]] = (f[0], _rel(root, f[0]), f[2])
        else:
            out[name] = (name, _rel(root, name), int(info.get("size") or 0))
    files = [f for f in out.values() if not _is_marker(f[1])]
    if not files:
        raise StoragePathNotFoundError(
            f"{folder.label}: pattern {pattern!r} matches nothing in {url}; check it against .ls()."
        )
    return sorted(files, key=lambda f: f[1])


def _remote_files(fs: "AbstractFileSystem", root: str) -> list[tuple[str, str, int]]:
    if _is_local(fs):
        return [(p, rel, size) for p, rel, size in _local_files(root, True)]
    found = fs.find(root, detail=True)
    return sorted(((name, _rel(root, name), int(info.get("size") or 0)) for name, info in found.items()
                   if info.get("type") != "directory"), key=lambda f: f[1])


def _local_files(root: str, recursive: bool) -> Iterator[tuple[str, str, int]]:
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            for entry in it:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=True):
                    if recursive:
                        stack.append((entry.path, rel + "/"))
                else:
                    yield entry.path, rel, entry.stat().st_size


def _copy_local_atomic(src_fs, dst_fs, dst_root: str, files, advance, max_workers, has_data: bool) -> None:
    parent, base = posixpath.split(dst_root.rstrip("/"))
    os.makedirs(parent or "/", exist_ok=True)
    staging = posixpath.join(parent, f".{base}.rh-tmp-{uuid.uuid4().hex[:12]}")
    try:
        os.makedirs(staging)
        jobs = [(src, posixpath.join(staging, rel), size) for src, rel, size in files]
        _transfer(src_fs, dst_fs, jobs, advance, max_workers)
        if os.path.isdir(dst_root) and not has_data:
            os.rmdir(dst_root)  # an empty directory stands in the way of rename
        if not os.path.exists(dst_root):
            os.rename(staging, dst_root)
            return
        from rh_iac.data import _exchange

        if _exchange(staging, dst_root):
            shutil.rmtree(staging, ignore_errors=True)  # staging now holds the previous contents
            return
        old = staging.replace(".rh-tmp-", ".rh-old-")
        os.rename(dst_root, old)
        os.rename(staging, dst_root)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _copy_with_marker(src_fs, dst_fs, dst_root: str, files, advance, max_workers, has_data: bool,
                      src_url: str) -> None:
    marker, pending = _join(dst_root, MARKER), _join(dst_root, MARKER + ".pending")
    # the pending object makes an unfinished copy recognisable even where no marker was ever written
    dst_fs.pipe_file(pending, json.dumps({"source": src_url}).encode())
    if dst_fs.exists(marker):
        dst_fs.rm(marker)
    jobs = [(src, _join(dst_root, rel), size) for src, rel, size in files]
    written = {j[1] for j in jobs}
    try:
        _transfer(src_fs, dst_fs, jobs, advance, max_workers)
    except BaseException:
        if not has_data:  # the destination was empty: leave it empty (best effort; the marker is absent anyway)
            try:
                dst_fs.invalidate_cache(dst_root)
                for path in dst_fs.find(dst_root):
                    if path.rstrip("/") in written:
                        dst_fs.rm(path)
                dst_fs.rm(pending)
            except Exception:  # noqa: BLE001 - the missing marker already says "incomplete"
                pass
        raise
    if has_data:  # replaced: drop files of the previous contents that the new copy does not have
        dst_fs.invalidate_cache(dst_root)
        stale = [p for p in dst_fs.find(dst_root) if p.rstrip("/") not in written and p not in (pending, marker)]
        if stale:
            dst_fs.rm(stale)
    info = {"files": len(files), "bytes": sum(f[2] for f in files), "source": src_url,
            "completed": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    dst_fs.pipe_file(marker, json.dumps(info).encode())
    dst_fs.rm(pending)
    dst_fs.invalidate_cache(dst_root)


def _transfer(src_fs, dst_fs, jobs: list[tuple[str, str, int]], advance: Callable[[int], None] | None,
              max_workers: int | None = None) -> None:
    """Copy ``(src, dst, size)`` pairs between two filesystems, concurrently."""
    if not jobs:
        return
    src_local, dst_local = _is_local(src_fs), _is_local(dst_fs)
    callback = _FsspecBytes(advance) if advance is not None else None
    kw = {"callback": callback} if callback is not None else {}
    srcs, dsts = [j[0] for j in jobs], [j[1] for j in jobs]
    if dst_local:
        for d in {posixpath.dirname(d) for d in dsts}:
            os.makedirs(d, exist_ok=True)
    if src_local and getattr(dst_fs, "async_impl", False):
        dst_fs.put(srcs, dsts, **kw)  # batched, concurrent uploads
        return
    if dst_local and getattr(src_fs, "async_impl", False):
        src_fs.get(srcs, dsts, **kw)  # batched, concurrent downloads
        return
    if src_fs is dst_fs and not src_local and _is_object_store(src_fs):
        src_fs.copy(srcs, dsts)  # server-side copies
        if advance:
            advance(sum(j[2] for j in jobs))
        return
    if not _is_object_store(dst_fs) and not dst_local:
        for d in {posixpath.dirname(d) for d in dsts}:
            dst_fs.makedirs(d, exist_ok=True)

    def one(job: tuple[str, str, int]) -> None:
        src, dst, size = job
        if src_local and dst_local:
            shutil.copyfile(src, dst)
            if advance:
                advance(size)
            return
        with src_fs.open(src, "rb") as fin, dst_fs.open(dst, "wb") as fout:
            while True:
                chunk = fin.read(_CHUNK)
                if not chunk:
                    break
                fout.write(chunk)
                if advance:
                    advance(len(chunk))

    workers = max(1, min(max_workers or DEFAULT_WORKERS, len(jobs)))
    if workers == 1:
        for job in jobs:
            one(job)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="rh-iac-copy") as pool:
        futures = [pool.submit(one, job) for job in jobs]
        try:
            for f in futures:
                f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


class _FsspecBytes:
    """An fsspec callback whose per-file children report transferred bytes to ``advance``."""

    def __new__(cls, advance: Callable[[int], None]):
        from fsspec.callbacks import Callback

        class Child(Callback):
            def relative_update(self, inc: int = 1) -> None:
                advance(inc)

            def absolute_update(self, value: int) -> None:
                if value > self.value:
                    advance(value - self.value)
                self.value = value

        class Parent(Callback):
            def branch(self, path_1, path_2, kwargs) -> None:  # noqa: ANN001 - fsspec's signature
                kwargs["callback"] = Child()

        return Parent()


@contextmanager
def _progress(total: int, progress: bool | None, description: str) -> Iterator[Callable[[int], None] | None]:
    """A byte progress bar on stderr (rich) when asked, or when stderr is a terminal and the copy is large."""
    show = progress if progress is not None else (total >= PROGRESS_MIN_BYTES and sys.stderr.isatty())
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


# --- blobs ----------------------------------------------------------------------------------------------------------
def _blob_fs(blob: "Blob") -> "tuple[AbstractFileSystem, str, str, str]":
    fs, root, url = filesystem(blob.folder)
    return fs, root, url, _join(root, blob.name)


def write_blob(blob: "Blob", value: Any) -> None:
    """Store ``value``: ``bytes``/``bytearray``/``memoryview`` as they are (at the blob's URL), anything else pickled
    (at ``<url>.pickle``). The object appears whole or not at all; the other form, if any, is removed after."""
    fs, root, url, target = _blob_fs(blob)
    _lineage(blob, "w")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data, path, other = bytes(value), target, target + PICKLE_SUFFIX
    else:
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - pickle raises many types
            raise StorageError(f"{blob.label}: the value ({type(value).__name__}) cannot be pickled: {exc}") from exc
        path, other = target + PICKLE_SUFFIX, target
    _require_bucket(blob.label, fs, root, url)
    with _mapped(blob.label, fs, root, url, _url(url, blob.name)):
        if _is_local(fs):
            os.makedirs(root, exist_ok=True)
            tmp = f"{posixpath.dirname(path)}/.{posixpath.basename(path)}.rh-tmp-{uuid.uuid4().hex[:12]}"
            try:
                with builtins.open(tmp, "wb") as f:  # open() is shadowed here
                    f.write(data)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            if not _is_object_store(fs):
                fs.makedirs(root, exist_ok=True)
            fs.pipe_file(path, data)  # one PUT: an object store never shows half an object
    fs.invalidate_cache(root)
    if fs.exists(other):
        fs.rm(other)


def fetch_blob(blob: "Blob") -> Any:
    """The blob's value: the bytes written, or the unpickled value (only fetch pickled blobs you trust)."""
    fs, root, url, target = _blob_fs(blob)
    fs.invalidate_cache(root)
    _lineage(blob, "r")
    for path, pickled in ((target, False), (target + PICKLE_SUFFIX, True)):
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            continue
        except IsADirectoryError:
            raise StorageError(f"{blob.label}: {_url(url, blob.name)} is a directory, not a blob's object.") from None
        return pickle.loads(data) if pickled else data
    raise _blob_missing(blob, fs, root, url)


def _blob_missing(blob: "Blob", fs, root: str, url: str) -> StorageError:
    err = _not_found(blob.label, fs, root, url, _url(url, blob.name))
    if isinstance(err, BucketNotFoundError):
        return err
    return StoragePathNotFoundError(
        f"{blob.label}: nothing stored at {_url(url, blob.name)} (nor {PICKLE_SUFFIX}); write it first with "
        f"{blob.name}.write(value)."
    )


def blob_exists(blob: "Blob") -> bool:
    """Whether the blob holds a value (in either form)."""
    fs, root, url, target = _blob_fs(blob)
    fs.invalidate_cache(root)
    return fs.exists(target) or fs.exists(target + PICKLE_SUFFIX)


def rm_blob(blob: "Blob", missing_ok: bool = False) -> None:
    """Remove the blob's object (either form); a missing blob raises unless ``missing_ok``."""
    fs, root, url, target = _blob_fs(blob)
    fs.invalidate_cache(root)
    found = [p for p in (target, target + PICKLE_SUFFIX) if fs.exists(p)]
    if not found:
        if missing_ok:
            return
        raise _blob_missing(blob, fs, root, url)
    for p in found:
        fs.rm(p)
    fs.invalidate_cache(root)


def copy_blob(blob: "Blob", dest: "str | Folder") -> "Blob":
    """Copy the blob into ``dest`` (a folder URL or a Folder) under the same name; returns the Blob there."""
    from rh_iac.model import Blob, _current_stack

    dest_folder = _dest_folder(blob.folder, dest)
    fs, root, url, target = _blob_fs(blob)
    fs.invalidate_cache(root)
    source = next((p for p in (target, target + PICKLE_SUFFIX) if fs.exists(p)), None)
    if source is None:
        raise _blob_missing(blob, fs, root, url)
    dst_fs, dst_root, dst_url = filesystem(dest_folder)
    _require_bucket(dest_folder.label, dst_fs, dst_root, dst_url)
    token = _current_stack.set(None)
    try:
        new = Blob(blob.name, folder=dest_folder, provider=blob._provider)
    finally:
        _current_stack.reset(token)
    data = fs.cat_file(source)
    if source == target:
        write_blob(new, data)
    else:  # keep the pickled form as it is, without unpickling it here
        dst = _join(dst_root, blob.name)
        with _mapped(new.label, dst_fs, dst_root, dst_url, _url(dst_url, blob.name)):
            if not _is_object_store(dst_fs):
                dst_fs.makedirs(dst_root, exist_ok=True)
            dst_fs.pipe_file(dst + PICKLE_SUFFIX, data)
        if dst_fs.exists(dst):
            dst_fs.rm(dst)
    return new


