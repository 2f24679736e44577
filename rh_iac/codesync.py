"""Code sync: the project's own Python source, importable on a cluster's workers without packaging it.

A function defined in the project (``stacks/jobs.py``, a package ``mylib/`` beside ``stacks/``, a top-level
``jobs.py``) is pickled *by reference* by cloudpickle — as "module ``stacks.jobs``, name ``double``" — so the worker
must be able to import that module, and every module it imports in turn. :func:`sync_code` makes that so::

    from rh_iac.codesync import sync_code

    client = rh_iac.connect(cluster)
    sync_code(client, project.root)      # idempotent: costs a stat walk of the project when nothing changed

How it works:

- :func:`project_snapshot` walks the project root and collects its Python source (``*.py`` and ``py.typed``),
  skipping hidden folders (``.git``, ``.rh_iac``, ``.venv``, ...), ``venv``, ``__pycache__``, ``build``, ``dist``,
  ``*.egg-info``, ``node_modules``, ``site-packages``, a Dask worker's scratch space, and any folder holding a
  ``pyvenv.cfg`` (a virtualenv by any name). Its digest is a SHA-256 over the relative paths and contents; file contents are re-read only when a file's
  ``(mtime_ns, size, inode, ctime_ns)`` changed since the last walk in this process, so an unchanged tree costs one
  ``stat`` per file. The zip sent to the workers is built only when the digest changed.
- :class:`CodeSyncPlugin` is a ``distributed.WorkerPlugin``: on each worker it extracts the zip to
  ``<worker.local_directory>/rh_iac-code/<digest>/``, puts that folder first on ``sys.path``, drops the previous
  snapshot's folder from ``sys.path`` and its modules from ``sys.modules`` (so the next import loads the new code
  without restarting the worker) and calls ``importlib.invalidate_caches()``.
- :func:`sync_code` registers the plugin under one fixed name (:data:`PLUGIN_NAME`): registering again replaces it on
  every worker, and the scheduler hands it to every worker that joins later (scaled up, or restarted by its nanny).
  It registers only when the digest differs from what this client last synced to this scheduler.

Importable names: a folder of the project without ``__init__.py`` (``stacks/`` usually has none) is a namespace
package, so ``stacks/jobs.py`` imports as ``stacks.jobs`` on the client (with the project root on ``sys.path``) and
on the workers alike; a folder with ``__init__.py`` is a regular package. A top-level name that would shadow the
standard library (a project file ``logging.py``) or rh_iac's own packages is not synced (see
:attr:`Snapshot.skipped`): replacing those inside a running worker would break the worker itself.

Functions of ``__main__`` (a script run directly, a notebook) are pickled by value instead; the modules they import
still resolve on the workers from the synced code.

Limits: one project's code per cluster at a time (the plugin has one fixed name, so the last client to sync wins);
swapping code while tasks of the old code run in other threads of the same worker is not isolated — those tasks keep
the module objects they already hold, and their later imports see the new code.

This module imports ``distributed``: import it lazily (inside the function that connects), so that ``import rh_iac``
and ``import rh_iac.compute`` stay light.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import re
import shutil
import sys
import threading
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from distributed.comm.core import CommClosedError
from distributed.diagnostics.plugin import WorkerPlugin

from rh_iac.errors import CodeSyncError

if TYPE_CHECKING:  # pragma: no cover
    import distributed

__all__ = [
    "PLUGIN_NAME",
    "MAX_SNAPSHOT_BYTES",
    "Snapshot",
    "project_snapshot",
    "CodeSyncPlugin",
    "sync_code",
    "unsync_code",
    "synced_digest",
    "ensure_synced",
]

#: the name the plugin is registered under on the scheduler: one project's code per cluster at a time
PLUGIN_NAME = "rh_iac-code-sync"
#: a snapshot whose source files add up to more than this (bytes) is refused with :class:`CodeSyncError`
MAX_SNAPSHOT_BYTES = 50 * 1024 * 1024
#: the folder, inside each worker's local directory, that holds one extracted snapshot per digest
CODE_DIR = "rh_iac-code"

_SKIP_DIRS = frozenset({
    "venv", "__pycache__", "build", "dist", "node_modules", "site-packages", "dist-packages",
    CODE_DIR, "dask-scratch-space", "dask-worker-space",  # a worker's local directory, if inside
})
_DATA_FILES = frozenset({"py.typed"})
_FORMAT = b"rh_iac-codesync-1\0"  # changes the digest if the snapshot format ever changes


def _protected_names() -> frozenset[str]:
    """Top-level names never synced nor evicted: the standard library, and rh_iac's own packages (rh_iac, runtime).

    A worker runs rh_iac itself (the task wrappers, this plugin): swapping it inside a live worker would break it.
    The client's and workers' rh_iac versions are compared at connect time instead (:mod:`rh_iac.versions`).
    """
    names = {"rh_iac", "__main__", "__mp_main__"}
    names.update(sys.stdlib_module_names)
    try:
        from importlib.metadata import distribution

        top = distribution("rh_iac").read_text("top_level.txt") or ""
        names.update(line.strip() for line in top.splitlines() if line.strip())
    except Exception:  # noqa: BLE001 - not installed as a distribution (a bare checkout): rh_iac alone
        names.add("runtime")
    return frozenset(names)


_PROTECTED: frozenset[str] | None = None


def _protected() -> frozenset[str]:
    global _PROTECTED
    if _PROTECTED is None:
        _PROTECTED = _protected_names()
    return _PROTECTED


# --- the client half: snapshot -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """The project's Python source at one moment: what :func:`sync_code` sends to the workers."""

    root: Path
    #: SHA-256 (hex) over the files' relative paths and contents
    digest: str
    #: relative POSIX paths of the files, sorted
    files: tuple[str, ...]
    #: the importable top-level names the files provide (modules ``x.py`` and packages ``x/``)
    top_level_names: tuple[str, ...]
    #: total size of the files, bytes
    size: int
    #: top-level names found but not synced because they would shadow the standard library or rh_iac itself
    skipped: tuple[str, ...] = ()
    _stats: tuple[tuple[str, str], ...] = field(default=(), repr=False, compare=False)  # (abs path, rel path)

    @property
    def zip_bytes(self) -> bytes:
        """The files as a deflated zip (built once per root and digest, then reused)."""
        return _zip_for(self)


_hash_cache: dict[str, tuple[tuple[int, int, int, int], str]] = {}  # abs path -> (stat key, sha256 of content)
_zip_cache: dict[str, tuple[str, bytes]] = {}  # root -> (digest, zip bytes): the last one only
_cache_lock = threading.Lock()


def _walk(root: Path) -> Iterable[tuple[str, str, os.stat_result]]:
    """(abs path, rel posix path, stat) of every file to sync, depth first, in no particular order."""
    stack = [(str(root), "")]
    while stack:
        folder, rel = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # unreadable or vanished folder: nothing of it can be synced
            continue
        if rel and any(e.name == "pyvenv.cfg" for e in entries):
            continue  # a virtualenv, whatever its name
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if name.startswith(".") or name in _SKIP_DIRS or name.endswith(".egg-info"):
                        continue
                    stack.append((entry.path, f"{rel}{name}/"))
                elif (name.endswith(".py") or name in _DATA_FILES) and entry.is_file():
                    yield entry.path, rel + name, entry.stat()
            except OSError:  # a file removed during the walk, a dangling symlink
                continue


def _top_level(relpath: str) -> str | None:
    head, sep, _ = relpath.partition("/")
    name = head if sep else (head[:-3] if head.endswith(".py") else "")
    return name if name.isidentifier() else None


def project_snapshot(root: str | os.PathLike, *, max_bytes: int = MAX_SNAPSHOT_BYTES) -> Snapshot:
    """The Python source under ``root`` and its digest (see the module docstring for what is collected).

    Re-reads only files whose stat changed since the previous call in this process. Raises :class:`CodeSyncError`
    if ``root`` is not a folder, or if the files add up to more than ``max_bytes``.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise CodeSyncError(f"code sync: project root {root} is not a folder; pass the folder that holds stacks/.")
    protected = _protected()
    found: list[tuple[str, str, os.stat_result]] = []
    skipped: set[str] = set()
    for abs_path, rel, st in _walk(root):
        top = _top_level(rel)
        if top is not None and top in protected:
            skipped.add(top)
            continue
        found.append((abs_path, rel, st))
    found.sort(key=lambda item: item[1])

    size = sum(st.st_size for _, _, st in found)
    if size > max_bytes:
        by_top: dict[str, int] = {}
        for _, rel, st in found:
            by_top[rel.partition("/")[0]] = by_top.get(rel.partition("/")[0], 0) + st.st_size
        biggest = ", ".join(f"{name} ({_mb(n)})" for name, n in sorted(by_top.items(), key=lambda kv: -kv[1])[:3])
        raise CodeSyncError(
            f"code sync: the Python source under {root} adds up to {_mb(size)} in {len(found)} files, above the "
            f"{_mb(max_bytes)} limit (largest: {biggest}). Move generated or vendored .py files out of the project, "
            f"or into a folder code sync skips (a hidden folder, build/, dist/ or a virtualenv), or raise the limit "
            f"with max_bytes=."
        )

    digest = hashlib.sha256(_FORMAT)
    with _cache_lock:
        for abs_path, rel, st in found:
            key = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)
            cached = _hash_cache.get(abs_path)
            if cached is not None and cached[0] == key:
                file_hash = cached[1]
            else:
                try:
                    with open(abs_path, "rb") as fh:
                        file_hash = hashlib.sha256(fh.read()).hexdigest()
                except OSError as exc:
                    raise CodeSyncError(f"code sync: cannot read {abs_path} ({exc}); fix its permissions or remove it.") from exc
                _hash_cache[abs_path] = (key, file_hash)
            digest.update(rel.encode() + b"\0" + file_hash.encode() + b"\0")
    files = tuple(rel for _, rel, _ in found)
    tops = sorted({t for t in map(_top_level, files) if t is not None})
    return Snapshot(root=root, digest=digest.hexdigest(), files=files, top_level_names=tuple(tops), size=size,
                    skipped=tuple(sorted(skipped)), _stats=tuple((a, r) for a, r, _ in found))


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def _zip_for(snapshot: Snapshot) -> bytes:
    key = str(snapshot.root)
    with _cache_lock:
        cached = _zip_cache.get(key)
        if cached is not None and cached[0] == snapshot.digest:
            return cached[1]
    buf = io.BytesIO()
    digest = hashlib.sha256(_FORMAT)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for abs_path, rel in snapshot._stats:
            try:
                with open(abs_path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise CodeSyncError(f"code sync: cannot read {abs_path} ({exc}); fix its permissions or remove it.") from exc
            digest.update(rel.encode() + b"\0" + hashlib.sha256(data).hexdigest().encode() + b"\0")
            zf.writestr(rel, data)
    if digest.hexdigest() != snapshot.digest:
        # A file changed between the walk and now: the zip must not go out under the old digest.
        raise CodeSyncError(
            f"code sync: files under {snapshot.root} changed while they were being collected; sync again."
        )
    data = buf.getvalue()
    with _cache_lock:
        _zip_cache[key] = (snapshot.digest, data)
    return data


# --- the worker half: the plugin ----------------------------------------------------------------------------------------

_SNAPSHOT_DIR = re.compile(r"(?:^|[\\/])" + re.escape(CODE_DIR) + r"[\\/]([0-9a-f]{64})(?:[\\/]|$)")


def _locations(module: Any) -> list[str]:
    """The files and folders a module was loaded from: ``__file__``, and ``__path__`` for (namespace) packages."""
    out: list[str] = []
    file = getattr(module, "__file__", None)
    if isinstance(file, str):
        out.append(file)
    try:
        path = getattr(module, "__path__", None)
        if path is not None:
            out.extend(p for p in list(path) if isinstance(p, str))
    except Exception:  # noqa: BLE001 - a namespace path recomputing against a changed sys.path; not our module then
        pass
    return out


def _under(location: str, folder: str) -> bool:
    return location == folder or location.startswith(folder + os.sep)


def evict_modules(top_level_names: Iterable[str], keep_dir: str | None, keep_digest: str | None) -> list[str]:
    """Remove from ``sys.modules`` the modules of other snapshots, and project modules loaded from elsewhere.

    A module goes if it was loaded from a snapshot folder of another digest, or if its top-level name is one of
    ``top_level_names`` and it was not loaded from ``keep_dir``. rh_iac's own and standard-library modules stay.
    Returns the names removed.
    """
    protected = _protected()
    names = set(top_level_names) - protected
    removed = []
    for name, module in list(sys.modules.items()):
        top = name.partition(".")[0]
        if module is None or top in protected:
            continue
        locations = _locations(module)
        stale = False
        for loc in locations:
            match = _SNAPSHOT_DIR.search(loc)
            if match and match.group(1) != keep_digest:
                stale = True
                break
        if not stale and top in names:
            stale = keep_dir is None or not any(_under(loc, keep_dir) for loc in locations)
        if stale:
            sys.modules.pop(name, None)
            removed.append(name)
    return removed


class CodeSyncPlugin(WorkerPlugin):
    """Puts one snapshot of the project's code on a worker's ``sys.path`` (see the module docstring).

    ``zip_bytes`` is :attr:`Snapshot.zip_bytes`, ``digest`` its :attr:`Snapshot.digest` and ``top_level_names`` the
    names whose modules, already imported on the worker from elsewhere, are evicted so they load from the snapshot.
    """

    name = PLUGIN_NAME
    idempotent = False  # registering again must replace the code on every worker

    def __init__(self, zip_bytes: bytes, digest: str, top_level_names: Iterable[str]) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"digest must be a SHA-256 hex digest, got {digest!r}")
        self.zip_bytes = zip_bytes
        self.digest = digest
        self.top_level_names = tuple(top_level_names)
        self.path: str | None = None  # set on the worker by setup()
        self.evicted: list[str] = []

    def setup(self, worker: "distributed.Worker") -> None:
        base = Path(worker.local_directory) / CODE_DIR
        target = base / self.digest
        self._extract(base, target)
        path = str(target)
        prefix = str(base) + os.sep
        # Drop every earlier snapshot of this worker from sys.path (one of them may be left by a plugin whose
        # teardown did not run), then put this one first.
        sys.path[:] = [p for p in sys.path if not (p == path or p.startswith(prefix))]
        sys.path.insert(0, path)
        self.path = path
        importlib.invalidate_caches()
        self.evicted = evict_modules(self.top_level_names, path, self.digest)
        self.zip_bytes = b""  # extracted: no need to hold it in the worker's memory
        for old in base.iterdir():  # earlier snapshots: no longer importable, so no longer needed on disk
            if old != target and not old.name.startswith(".tmp-"):
                shutil.rmtree(old, ignore_errors=True)

    def _extract(self, base: Path, target: Path) -> None:
        if (target / ".complete").is_file():  # the same digest was extracted before (a re-registration)
            return
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f".tmp-{self.digest[:16]}-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(io.BytesIO(self.zip_bytes)) as zf:
            zf.extractall(tmp)
        (tmp / ".complete").write_text(self.digest)
        shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier extraction
        os.replace(tmp, target)

    def teardown(self, worker: "distributed.Worker") -> None:
        if self.path is None:
            return
        while self.path in sys.path:
            sys.path.remove(self.path)
        importlib.invalidate_caches()
        evict_modules((), None, None)  # the snapshot's modules: no snapshot is current any more
        self.path = None

    def __repr__(self) -> str:
        return f"CodeSyncPlugin({self.digest[:12]}, {list(self.top_level_names)})"


# --- the client half: sync --------------------------------------------------------------------------------------------
_synced: dict[tuple[str, str, str], str] = {}  # (client id, scheduler id, root) -> digest last registered
_sync_locks: dict[tuple[str, str, str], threading.Lock] = {}
_synced_lock = threading.Lock()


def _scheduler_id(client: "distributed.Client") -> str:
    # The scheduler's id, as the client learnt it when it (re)connected: no round trip. A restarted scheduler has a
    # new id and none of the old plugins, so the code is synced again.
    identity = getattr(client, "_scheduler_identity", None) or {}
    return str(identity.get("id") or getattr(getattr(client, "scheduler", None), "address", "") or "")


def _cache_key(client: "distributed.Client", root: Path) -> tuple[str, str, str]:
    return (str(client.id), _scheduler_id(client), str(root))


def synced_digest(client: "distributed.Client", root: str | os.PathLike) -> str | None:
    """The digest this process last synced through ``client`` for ``root``, or None."""
    return _synced.get(_cache_key(client, Path(root).resolve()))


def sync_code(client: "distributed.Client", root: str | os.PathLike, *, max_bytes: int = MAX_SNAPSHOT_BYTES) -> str:
    """Make the Python source under ``root`` importable on every current and future worker of ``client``'s cluster.

    Idempotent: when the snapshot's digest is the one this client last synced to this scheduler for ``root``, it
    costs only the stat walk of :func:`project_snapshot`. Otherwise it registers a :class:`CodeSyncPlugin` (which
    replaces the previous one on every worker, without restarting them) and returns once every worker has set it
    up. Returns the digest. Raises :class:`CodeSyncError` for a snapshot that cannot be made or set up.
    """
    root = Path(root).resolve()
    key = _cache_key(client, root)
    with _synced_lock:
        lock = _sync_locks.setdefault(key, threading.Lock())
    with lock:
        snapshot = project_snapshot(root, max_bytes=max_bytes)
        if _synced.get(key) == snapshot.digest:
            return snapshot.digest
        shadowing = [n for n in snapshot.skipped if n in sys.stdlib_module_names]
        if shadowing:
            warnings.warn(
                f"code sync of {root}: not syncing {', '.join(shadowing)}, which would shadow the standard library on "
                f"the workers; rename them to make them importable there.",
                stacklevel=2,
            )
        plugin = CodeSyncPlugin(snapshot.zip_bytes, snapshot.digest, snapshot.top_level_names)
        try:
            client.register_plugin(plugin, name=PLUGIN_NAME)
        except (CommClosedError, TimeoutError):  # the scheduler is unreachable: that error says it best
            raise
        except Exception as exc:  # a worker failed to set the plugin up (its disk is full, ...): re-raised from there
            raise CodeSyncError(
                f"code sync of {root} (digest {snapshot.digest[:12]}) failed on a worker: {type(exc).__name__}: "
                f"{exc}. Check the workers' local directory (free space, permissions), then sync again."
            ) from exc
        with _synced_lock:
            for other in [k for k in _synced if k[:2] == key[:2] and k != key]:
                del _synced[other]  # the plugin name is shared: another root's code is no longer there
            _synced[key] = snapshot.digest
        return snapshot.digest


def _is_registered(dask_scheduler) -> bool:
    return PLUGIN_NAME in dask_scheduler.worker_plugins


def unsync_code(client: "distributed.Client") -> None:
    """Remove the synced code from every worker of ``client``'s cluster (and forget it was synced)."""
    if client.run_on_scheduler(_is_registered):  # (unregistering an unknown plugin logs an error there)
        try:
            client.unregister_worker_plugin(PLUGIN_NAME)
        except ValueError:  # unregistered meanwhile
            pass
    with _synced_lock:
        for key in [k for k in _synced if k[0] == str(client.id)]:
            del _synced[key]


# --- for RemoteFunction: which project, once per bound function --------------------------------------------------------
def project_root_for(fn: Any = None) -> Path | None:
    """The project whose code ``fn`` needs: the project holding ``fn``'s source file, else the current project
    (``$RH_IAC_PROJECT`` or the working directory, see :meth:`Project.find`), else None. Code of rh_iac itself
    or of the standard library needs none."""
    from rh_iac.errors import StackFileError
    from rh_iac.project import Project

    module_name = getattr(fn, "__module__", None) or ""
    if module_name.partition(".")[0] in _protected() - {"__main__", "__mp_main__"}:
        return None  # rh_iac's own functions (and the standard library's) run from the installed packages
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if isinstance(file, str) and "site-packages" not in file and "dist-packages" not in file:
        try:
            return Project.find(os.path.dirname(file)).root
        except StackFileError:
            pass
    try:
        return Project.find().root
    except StackFileError:
        return None


def ensure_synced(remote: Any, client: "distributed.Client") -> "distributed.Client":
    """Sync the project code ``remote.fn`` (or a module's ``remote.cls``) needs, once per bound object and client.

    For ``RemoteFunction.client``: the first use after ``.to()`` walks the project (and syncs it if it changed);
    later calls of the same bound function reuse that. Outside any project it does nothing. Returns ``client``.
    """
    marker = (str(client.id), _scheduler_id(client))
    if getattr(remote, "_rh_iac_code_synced", None) == marker:
        return client
    root = project_root_for(getattr(remote, "fn", None) or getattr(remote, "cls", None))
    if root is not None:
        sync_code(client, root)
    try:
        remote._rh_iac_code_synced = marker
    except AttributeError:  # an object with __slots__: sync every time instead
        pass
    return client
