"""A remote key-value store of RNS records on any fsspec URL, versioned with check-and-set writes.

Layout under the store's URL, for the record at address ``/team/sub/name`` (``~/name`` is kept under ``_local/``)::

    team/sub/name/v00000001.json     immutable version objects: {"version", "address", "record", "author", "time"}
    team/sub/name/v00000002.json
    team/sub/name/latest             a hint: {"version": 2}

A write says which version it read (``expected_version``; 0 for a new record) and creates ``v<expected+1>`` with an
*exclusive create*: on local disks a hard link of a complete temporary file (``link(2)`` fails if the target exists),
on S3 a conditional ``PUT`` with ``If-None-Match: *`` (s3fs ``mode="create"``; AWS S3 and moto's server honour it),
in memory fsspec's ``pipe_file(mode="create")`` (one process only). moto's server (5.x) checks ``If-None-Match`` in
its ``PutObject`` handler, as AWS does; tests/test_rns_remote.py races six writers through it. Of concurrent writers
of one version exactly one succeeds; the others get :class:`~rh_iac.errors.RecordConflictError` carrying both
versions and the record they meant to write, so nothing is lost and never does the last writer win silently.
Other protocols (gs, http, ...) are refused rather than given a check-then-write that could lose updates.

Limits: on S3 a store must not be shared with clients that write version objects without the condition; a very
old S3-compatible server that ignores ``If-None-Match`` would silently degrade to last-writer-wins for one version.

The ``latest`` pointer is only a hint, rewritten after each successful write: a reader starts from it and rolls
forward over any newer version object (one existence check, normally answered "no"), so a writer that died between
the two steps, or pointer writes landing out of order, can cost a reader a few requests but never a wrong answer.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rh_iac.errors import RecordConflictError, RemoteStoreError, ResourceNotFoundError, RNSError
from rh_iac.files import write_atomic

if TYPE_CHECKING:  # pragma: no cover
    from rh_iac.rns.groups import Groups

#: protocols with an atomic create-if-absent rh_iac knows how to use
_LINK_PROTOCOLS = ("file", "local")
_CREATE_PROTOCOLS = ("memory", "s3", "s3a")
LOCAL_KEY = "_local"


@dataclass(frozen=True)
class RemoteRecord:
    """One version of a record in a :class:`RemoteRNS`."""

    address: str
    version: int
    record: dict[str, Any]
    author: str | None
    time: str


def _canonical(address: str) -> tuple[str, str]:
    """``(canonical address, key)`` of an RNS address: ``/team/x`` -> ``team/x``, ``~/sub/x`` -> ``_local/sub/x``."""
    from rh_iac.rns.addresses import address as join_address
    from rh_iac.rns.addresses import resolve

    full = join_address(*resolve(address))
    if full.startswith("~/"):
        return full, f"{LOCAL_KEY}/{full[2:]}"
    return full, full.lstrip("/")


def _address_of_key(key: str) -> str:
    return "~/" + key[len(LOCAL_KEY) + 1:] if key.startswith(LOCAL_KEY + "/") else "/" + key


def _validate_record(record: object, address: str) -> dict[str, Any]:
    """``record`` if it can be pushed: a dict with "name" and "type", holding no secret value."""
    from rh_iac.rns.schema import refuse_secret_value

    if not isinstance(record, dict) or not all(isinstance(record.get(f), str) and record[f] for f in ("name", "type")):
        raise RNSError(f"the record pushed to {address} must be a dict with string 'name' and 'type' fields.")
    refuse_secret_value(record, address)
    return record


class RemoteRNS:
    """RNS records on an fsspec URL (``s3://bucket/rns``, ``file:///shared/rns``, ``memory://rns``).

    ``storage_options`` are fsspec options for the URL's filesystem (e.g. an S3 ``endpoint_url``). ``groups`` and
    ``user`` are what pushes are checked against (:func:`rh_iac.rns.groups.check_write`; default: the current
    project's groups file and git email)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, *, groups: "Groups | None" = None,
                 user: str | None = None) -> None:
        import fsspec

        if not isinstance(url, str) or not url:
            raise RemoteStoreError(f"a remote RNS store needs an fsspec URL such as 's3://bucket/rns', got {url!r}.")
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/")
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        if protocol not in (*_LINK_PROTOCOLS, *_CREATE_PROTOCOLS):
            raise RemoteStoreError(
                f"remote RNS store {url}: no atomic create-if-absent is known for protocol {protocol!r}, so concurrent "
                f"writers could lose updates; use file://, s3:// or memory://."
            )
        self._link = protocol in _LINK_PROTOCOLS
        self.groups, self.user = groups, user

    def __repr__(self) -> str:
        return f"RemoteRNS({self.url!r})"

    # --- paths --------------------------------------------------------------------------------------------------
    def _dir(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _version_path(self, key: str, version: int) -> str:
        return f"{self._dir(key)}/v{version:08d}.json"

    def _read_json(self, path: str) -> Any:
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            raise RemoteStoreError(f"remote RNS object {self.url} {path} is not valid JSON ({exc}).") from exc

    def _create(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` only if it does not exist; return whether this call created it."""
        if self._link:
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True

    # --- versions -----------------------------------------------------------------------------------------------
    def version(self, address: str) -> int:
        """The latest version of ``address`` (0 if it has none): the ``latest`` hint, rolled forward."""
        _, key = _canonical(address)
        self.fs.invalidate_cache(self._dir(key))  # s3fs may hold a listing from before another writer's version
        try:
            hint = self._read_json(f"{self._dir(key)}/latest")
        except RemoteStoreError:
            hint = None  # a torn or hand-broken hint: roll forward from the start
        version = hint.get("version", 0) if isinstance(hint, dict) and isinstance(hint.get("version"), int) else 0
        while self.fs.exists(self._version_path(key, version + 1)):
            version += 1
        while version > 0 and not self.fs.exists(self._version_path(key, version)):  # a hint from a wiped store
            version -= 1
        return version

    def pull(self, address: str, version: int | None = None) -> RemoteRecord:
        """``address``'s record at ``version`` (default: the latest), or :class:`ResourceNotFoundError`."""
        full, key = _canonical(address)
        version = self.version(address) if version is None else version
        doc = self._read_json(self._version_path(key, version)) if version > 0 else None
        if not isinstance(doc, dict) or not isinstance(doc.get("record"), dict):
            which = f"version {version} of " if version else ""
            raise ResourceNotFoundError(f"remote RNS store {self.url} has no {which}record {full}; push it first.")
        return RemoteRecord(full, version, doc["record"], doc.get("author"), doc.get("time", ""))

    def history(self, address: str) -> list[RemoteRecord]:
        """Every version of ``address``, oldest first."""
        return [self.pull(address, v) for v in range(1, self.version(address) + 1)]

    def push(self, record: dict[str, Any], expected_version: int, *, address: str | None = None) -> int:
        """Write ``record`` as the next version of ``address`` (default: its ``name`` in the current folder) and
        return the new version number.

        ``expected_version`` is the version this record was based on (0 for a record the store does not have). If
        the store has moved on, or another writer creates the same version first, :class:`RecordConflictError` is
        raised: pull the latest version, merge, and push again with its number. The write is refused with
        :class:`~rh_iac.errors.AccessDeniedError` if the user may not write the record's folder."""
        from rh_iac.rns.groups import check_write

        full, key = _canonical(address or _validate_record(record, "the remote store")["name"])
        record = _validate_record(record, full)
        if isinstance(expected_version, bool) or not isinstance(expected_version, int) or expected_version < 0:
            raise RNSError(f"push of {full}: expected_version must be the version read (an int >= 0), "
                           f"got {expected_version!r}.")
        check_write(full, self.user, self.groups)
        current = self.version(full)
        if current != expected_version or not self._create(self._version_path(key, expected_version + 1),
                                                           self._document(full, expected_version + 1, record)):
            raise self._conflict(full, expected_version, record)
        self._write_hint(key, expected_version + 1)
        return expected_version + 1

    def _write_hint(self, key: str, version: int) -> None:
        """Point ``latest`` at ``version`` (atomically replaced on local disks; one PUT on object stores)."""
        path, data = f"{self._dir(key)}/latest", json.dumps({"version": version}).encode()
        try:
            if self._link:
                write_atomic(path, data)
            else:
                self.fs.pipe_file(path, data)
        except OSError:
            pass  # only a hint: readers roll forward from an older one

    def _document(self, address: str, version: int, record: dict[str, Any]) -> bytes:
        from rh_iac.rns.groups import current_user_email

        return json.dumps({
            "version": version, "address": address, "record": record,
            "author": self.user or current_user_email(),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        }, indent=2, sort_keys=True).encode()

    def _conflict(self, address: str, expected: int, record: dict[str, Any]) -> RecordConflictError:
        current = self.version(address)
        return RecordConflictError(
            f"record {address} in {self.url} is at version {current}, but this write was based on version {expected}"
            f": someone else wrote it meanwhile. Nothing was overwritten; pull version {current} "
            f"(RemoteRNS.pull({address!r})), merge your change into it and push again with expected_version={current}"
            f" (the rejected record is the error's .rejected).",
            address=address, expected_version=expected, current_version=current, rejected=record,
        )

    def list(self, folder: str | None = None) -> list[str]:
        """The addresses the store holds (under ``folder``, e.g. ``/team``, if given), sorted."""
        prefix = self.root
        if folder is not None:
            from rh_iac.rns.addresses import canonical_folder

            canonical = canonical_folder(folder)
            prefix += "/" + (LOCAL_KEY + canonical[1:] if canonical.startswith("~") else canonical.lstrip("/"))
        self.fs.invalidate_cache(prefix)
        try:
            files = self.fs.find(prefix)
        except FileNotFoundError:
            return []
        keys = {f.rsplit("/", 1)[0] for f in files if f.rsplit("/", 1)[-1].startswith("v") and f.endswith(".json")}
        return sorted(_address_of_key(k[len(self.root) + 1:]) for k in keys if k.startswith(self.root + "/"))


# --- sync between a GitRNS and a RemoteRNS ----------------------------------------------------------------------
def _sync_state_path(state_root: Path, url: str) -> Path:
    return state_root / "rns-sync" / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".json")


class SyncState:
    """Which remote version each local record was last pushed as or pulled from (kept in ``.rh_iac/rns-sync/``,
    gitignored): the base a later push says it read, so a push never overwrites a version it has not seen."""

    def __init__(self, state_root: Path, url: str) -> None:
        self.path = _sync_state_path(Path(state_root), url)
        try:
            self.versions: dict[str, int] = json.loads(self.path.read_text())
        except FileNotFoundError:
            self.versions = {}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(self.versions, indent=2, sort_keys=True).encode())


def push_all(rns: Any, remote: RemoteRNS, state_root: Path, folder: str = "~") -> dict[str, int]:
    """Push every record of ``folder`` of the local ``rns`` that differs from the remote, to the same addresses
    there; return address -> new version.

    Each push is based on the version last synced (see :class:`SyncState`): if someone else pushed meanwhile, the
    push raises :class:`RecordConflictError`; :func:`pull_all` first, then push again."""
    from rh_iac.rns.addresses import address, canonical_folder

    folder = canonical_folder(folder)
    state = SyncState(state_root, remote.url)
    pushed: dict[str, int] = {}
    try:
        for name in rns.list(folder):
            full = address(folder, name)
            record = rns.read(full)
            base = state.versions.get(full, 0)
            if base and remote.pull(full, base).record == record:
                continue  # unchanged since it was last synced: nothing of ours to send
            current = remote.version(full)
            if current != base and current and remote.pull(full, current).record == record:
                state.versions[full] = current  # someone pushed this very record already
                continue
            state.versions[full] = pushed[full] = remote.push(record, base, address=full)
    finally:
        state.save()
    return pushed


def pull_all(rns: Any, remote: RemoteRNS, state_root: Path, folder: str = "~",
             remote_folder: str | None = None) -> str | None:
    """Pull the remote's records (under ``remote_folder``, default ``folder``) into ``folder`` of the local ``rns``
    and commit them (RNS paths only); return the commit, or None if nothing changed. Writing into ``folder`` needs
    write access to it (:func:`rh_iac.rns.groups.check_write`).

    A local record edited since it was last synced, whose remote copy also moved on, is a conflict: it raises
    :class:`RecordConflictError` before anything is written."""
    from rh_iac.rns.addresses import address, canonical_folder
    from rh_iac.rns.groups import check_write

    folder = canonical_folder(folder)
    state = SyncState(state_root, remote.url)
    incoming: list[tuple[str, RemoteRecord]] = []
    for full in remote.list(remote_folder or folder):
        latest = remote.pull(full)
        name = full.rsplit("/", 1)[1]
        check_write(address(folder, name), remote.user, remote.groups, root=rns.root)
        base = state.versions.get(full, 0)
        try:
            local = rns.read(address(folder, name))
        except ResourceNotFoundError:
            local = None
        if local is not None and local != latest.record:
            if latest.version == base:
                continue  # only the local copy changed: push_all sends it
            synced = remote.pull(full, base).record if base else None
            if local != synced:
                raise RecordConflictError(
                    f"record {full}: the local copy in {folder} changed since it was synced at version {base}, and "
                    f"{remote.url} has version {latest.version} from {latest.author}. Nothing was written; merge the "
                    f"two by hand (RemoteRNS.pull({full!r})), write the result locally and push.",
                    address=full, expected_version=base, current_version=latest.version, rejected=local,
                )
        if local == latest.record:
            state.versions[full] = latest.version  # already the same here
        else:
            incoming.append((full, latest))
    for full, latest in incoming:
        rns.write(latest.record, folder=folder)
        state.versions[full] = latest.version
    state.save()
    written = [address(folder, full.rsplit("/", 1)[1]) for full, _ in incoming]
    return rns.commit(f"rns: pull {len(incoming)} record(s) from {remote.url}", only=written) if incoming else None


def sync(rns: Any, remote: RemoteRNS, state_root: Path, folder: str = "~") -> tuple[str | None, dict[str, int]]:
    """Both ways for one folder: :func:`pull_all` (others' new versions, committed), then :func:`push_all` (ours).

    Returns the pull's commit (or None) and what was pushed; a record both sides changed is a
    :class:`RecordConflictError` before anything is written."""
    return pull_all(rns, remote, state_root, folder), push_all(rns, remote, state_root, folder)
