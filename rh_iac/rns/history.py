"""Versions of an RNS record from git: history, a record at a version, field-level diffs, rollback pins.

:func:`history` costs one ``git log --raw`` over the record's file and one ``git cat-file --batch`` for all its
versions' blobs (no object per commit), so a record with 1,000 versions lists in well under a second.

A rollback cannot rewrite the stack file (it is Python), so it is a PIN: the restored record carries
``"pinned": {"version": <sha>, "spec": <old spec>, "by": <user>, "time": <ISO time>}``. Before planning,
:func:`apply_pins` (called by deploy and preview) rebuilds each pinned resource of the stack from the pinned spec,
so the engine applies the old spec; once the stack file declares the same spec again the pin is dropped, and
:func:`unpin` drops it by hand.
"""

from __future__ import annotations

import difflib
import json
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from rh_iac.errors import (
    RecordCorruptError,
    RecordFieldError,
    ResourceNotFoundError,
    RhIacError,
    RNSError,
    VersionNotFoundError,
)
from rh_iac.rns import addresses

if TYPE_CHECKING:  # pragma: no cover
    from rh_iac.model import Resource, Stack
    from rh_iac.rns.store import GitRNS

_MISSING = object()
#: values longer than this are named, not shown, in a version's one-line summary of changes
_SHOWN = 32


@dataclass(frozen=True)
class Version:
    """One commit that changed a record: who, when, why, and which fields changed (``"spec.workers 2 -> 1"``)."""

    commit: str
    author: str
    time: str
    message: str
    changes: tuple[str, ...]
    #: the record as committed, None where the commit deleted it (or its JSON was unreadable)
    record: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    deleted: bool = False

    @property
    def short(self) -> str:
        return self.commit[:12]

    @property
    def summary(self) -> str:
        """The changed fields, comma-separated: ``spec.workers 2 -> 1, status``."""
        return ", ".join(self.changes)


@dataclass(frozen=True)
class FieldChange:
    """One field that differs between two versions; a side where the field is absent is None, flagged by
    ``added`` (absent before) or ``removed`` (absent after)."""

    field: str
    before: Any
    after: Any
    added: bool = False
    removed: bool = False

    def __str__(self) -> str:
        if self.added:
            return f"+ {self.field} = {json.dumps(self.after)}"
        if self.removed:
            return f"- {self.field} (was {json.dumps(self.before)})"
        return f"~ {self.field}: {json.dumps(self.before)} -> {json.dumps(self.after)}"


@dataclass(frozen=True)
class RecordDiff:
    """The difference between two versions of a record: field by field, and as a unified diff of the JSON."""

    address: str
    before_label: str
    after_label: str
    changes: tuple[FieldChange, ...]
    text: str

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __str__(self) -> str:
        head = f"{self.address}: {self.before_label} -> {self.after_label}"
        if not self.changes:
            return head + ": no changes"
        return "\n".join([head, *(f"  {c}" for c in self.changes)])


# --- field-level comparison ---------------------------------------------------------------------------------------
def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"spec.workers": 2, ...}``: nested objects become dotted keys; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def field_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> tuple[FieldChange, ...]:
    """The fields that differ from ``before`` to ``after`` (either may be None: no record)."""
    old, new = flatten(before or {}), flatten(after or {})
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if a == b and type(a) is type(b):
            continue
        changes.append(FieldChange(key, None if a is _MISSING else a, None if b is _MISSING else b,
                                   added=a is _MISSING, removed=b is _MISSING))
    return tuple(changes)


def _new_object(before: dict[str, Any], after: dict[str, Any], dotted: str) -> str | None:
    """``+parent`` / ``-parent`` if a parent object of ``dotted`` exists on one side only, else None."""
    keys = dotted.split(".")
    for depth in range(1, len(keys)):
        old, new = _get(before, keys[:depth]), _get(after, keys[:depth])
        if old is _MISSING and new is not _MISSING:
            return "+" + ".".join(keys[:depth])
        if new is _MISSING and old is not _MISSING:
            return "-" + ".".join(keys[:depth])
    return None


def _get(record: Any, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(record, dict) or key not in record:
            return _MISSING
        record = record[key]
    return record


def _summary(before: dict[str, Any] | None, after: dict[str, Any] | None) -> tuple[str, ...]:
    """One short item per changed field (``spec.workers 2 -> 1``); long values are named, not shown, and a parent
    with more than 3 changed fields (e.g. ``outputs.tls``) is named once."""
    parts = []
    for change in field_changes(before, after):
        a, b = json.dumps(change.before), json.dumps(change.after)
        name = change.field
        whole = _new_object(before or {}, after or {}, name)
        if whole is not None:  # an object added or removed as a whole (e.g. a rollback's "pinned") is named once
            name, text = whole[1:], whole
        elif change.added or change.removed or len(a) > _SHOWN or len(b) > _SHOWN:
            text = ("+" if change.added else "-" if change.removed else "") + name
        else:
            text = f"{name} {a} -> {b}"
        parts.append((name, text))
    parents = Counter(f.rsplit(".", 1)[0] for f, _ in parts if "." in f)
    out: list[str] = []
    for name, text in parts:
        parent = name.rsplit(".", 1)[0]
        item = parent if "." in name and parents[parent] > 3 else text
        if item not in out:
            out.append(item)
    return tuple(out)


# --- git ----------------------------------------------------------------------------------------------------------
def _git(rns: GitRNS, *args: str, input: bytes | None = None) -> bytes:
    repo = rns._repo()
    try:
        return subprocess.run(["git", *args], cwd=repo.working_tree_dir, input=input, capture_output=True,
                              check=True).stdout
    except subprocess.CalledProcessError as exc:
        raise RNSError(f"git {args[0]} failed in {repo.working_tree_dir}: "
                       f"{exc.stderr.decode(errors='replace').strip()}") from exc


def _file_of(rns: GitRNS, address: str) -> tuple[str, str, str]:
    """``(full address, name, path relative to the work tree)`` of ``address``, found or (if deleted) expected."""
    try:
        folder, name, path = rns.locate(address)
    except ResourceNotFoundError:
        folder, name = addresses.resolve(address)
        path = addresses.folder_dir(rns.dir, folder) / f"{name}.json"
    repo = rns._repo()
    rel = f"{rns._relpath(repo)}/{path.relative_to(rns.dir).as_posix()}"
    return addresses.address(folder, name), name, rel


def _blobs(rns: GitRNS, shas: list[str]) -> dict[str, bytes]:
    """The contents of ``shas``, in one ``git cat-file --batch``."""
    unique = list(dict.fromkeys(shas))
    if not unique:
        return {}
    out = _git(rns, "cat-file", "--batch", input=("\n".join(unique) + "\n").encode())
    blobs, pos = {}, 0
    for sha in unique:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        if len(header) < 3 or header[1] != b"blob":
            raise RNSError(f"git has no blob {sha} for an RNS record version: the repository may be shallow or "
                           f"damaged (`git fsck`).")
        size = int(header[2])
        blobs[sha] = out[end + 1:end + 1 + size]
        pos = end + 1 + size + 1
    return blobs


def history(rns: GitRNS, address: str) -> list[Version]:
    """The versions of ``address``'s record, newest first: commit, author, time (ISO 8601), message, and the fields
    that changed from the version before. A deleted record still has its history (its last version is marked)."""
    full, name, rel = _file_of(rns, address)
    repo = rns._repo()
    if not repo.head.is_valid():
        return []
    log = _git(rns, "log", "--format=%x1e%H%x1f%an <%ae>%x1f%aI%x1f%B%x1f", "--raw", "--no-abbrev", "--no-renames",
               "--", rel).decode("utf-8", errors="replace")
    entries = []
    for chunk in log.split("\x1e")[1:]:
        sha, author, time, message, raw = chunk.split("\x1f", 4)
        blob, deleted = None, False
        for line in raw.strip().splitlines():
            if line.startswith(":") and line.endswith("\t" + rel):
                meta = line.split("\t", 1)[0].split()
                deleted = meta[4].startswith("D")
                blob = None if deleted else meta[3]
        entries.append((sha, author, time, message.strip(), blob, deleted))
    blobs = _blobs(rns, [e[4] for e in entries if e[4]])
    records: list[dict[str, Any] | None] = []
    for entry in entries:
        record = None
        if entry[4]:
            try:
                record = json.loads(blobs[entry[4]])
            except ValueError:
                record = None
        records.append(record if isinstance(record, dict) else None)
    versions = []
    for i, (sha, author, time, message, blob, deleted) in enumerate(entries):
        older = records[i + 1] if i + 1 < len(records) else None
        if deleted:
            changes: tuple[str, ...] = ("deleted",)
        elif blob and records[i] is None:
            changes = ("unreadable JSON",)
        elif i + 1 == len(entries) or entries[i + 1][5]:
            changes = ("created",)
        else:
            changes = _summary(older, records[i]) or ("no field changes",)
        versions.append(Version(sha, author, time, message, changes, records[i], deleted))
    return versions


def _pick(versions: list[Version], address: str, version: str | int) -> Version:
    if not versions:
        raise VersionNotFoundError(f"RNS record {address!r} has no committed versions yet; deploy and commit first.")
    if isinstance(version, int) or (isinstance(version, str) and version.isdigit() and len(version) < 4):
        index = int(version)
        if not 0 <= index < len(versions):
            raise VersionNotFoundError(
                f"RNS record {address!r} has {len(versions)} versions (0 = newest ... {len(versions) - 1}); "
                f"there is no version {index}. See `invoke rns.history {address}`."
            )
        return versions[index]
    prefix = str(version).strip().lower()
    matches = [v for v in versions if len(prefix) >= 4 and v.commit.startswith(prefix)]
    if len(matches) != 1:
        why = "matches several versions" if matches else "is not a version of it"
        raise VersionNotFoundError(
            f"{version!r} {why} of RNS record {address!r}: give an index (0 = newest, 1 = the one before) or at "
            f"least 4 characters of a commit sha from `invoke rns.history {address}`."
        )
    return matches[0]


def _record_of(version: Version, address: str) -> dict[str, Any]:
    if version.deleted:
        raise VersionNotFoundError(f"RNS record {address!r} was deleted at version {version.short}; pick an older "
                                   f"version.")
    if version.record is None:
        raise RecordCorruptError(f"RNS record {address!r} at version {version.short} is not valid JSON; pick another "
                                 f"version.")
    return version.record


def read_at(rns: GitRNS, address: str, version: str | int) -> dict[str, Any]:
    """The record as committed at ``version``: a commit sha prefix (4+ characters), or an index into
    :func:`history` (0 = newest committed, 1 = the one before)."""
    return _record_of(_pick(history(rns, address), address, version), address)


def diff(rns: GitRNS, address: str, v1: str | int = 1, v2: str | int | None = None) -> RecordDiff:
    """From version ``v1`` (default 1, the one before the newest) to ``v2`` (default: the record as it is on disk
    now): the changed fields and a unified diff of the JSON, both readable in a review."""
    from rh_iac.rns.store import serialize

    versions = history(rns, address)
    full = _file_of(rns, address)[0]
    older = _pick(versions, full, v1)
    before = _record_of(older, full)
    if v2 is None:
        try:
            after: dict[str, Any] | None = rns.read(address)
        except ResourceNotFoundError:
            after = None
        after_label = "working tree"
    else:
        newer = _pick(versions, full, v2)
        after, after_label = _record_of(newer, full), newer.short
    text = "".join(difflib.unified_diff(
        serialize(before).decode().splitlines(keepends=True),
        serialize(after).decode().splitlines(keepends=True) if after is not None else [],
        fromfile=f"{full}@{older.short}", tofile=f"{full}@{after_label}"))
    return RecordDiff(full, older.short, after_label, field_changes(before, after), text)


def _user() -> str:
    try:
        return addresses.current_user()
    except RNSError:
        return "unknown"


def rollback(rns: GitRNS, address: str, version: str | int) -> dict[str, Any]:
    """Restore ``address``'s record to ``version`` and commit ("rns: rollback <name> to <sha>"); returns the record.

    A stack's resource keeps its live outputs and status and gets a pin of the old spec, which the next
    ``invoke deploy`` applies (:func:`apply_pins`); saved code (a function or module record) is restored as it was.
    """
    folder, name, _ = rns.locate(address)
    full = addresses.address(folder, name)
    target = _pick(history(rns, full), full, version)
    old = {k: v for k, v in _record_of(target, full).items() if k != "pinned"}
    current = rns.read(full)
    if current.get("type") != old.get("type"):
        raise RNSError(f"cannot roll {full!r} back to {target.short}: it was a {old.get('type')} then and is a "
                       f"{current.get('type')} now; remove the record and redeploy instead.")
    if current.get("stack"):
        live = {k: current[k] for k in ("outputs", "status") if k in current}  # what is deployed now stays true
        pin = {"version": target.commit, "spec": old.get("spec") or {}, "by": _user(),
               "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        restored = {**old, **live, "pinned": pin}
    else:
        restored = old
    from rh_iac.rns.schema import display_path, validate_record

    # a version that breaks the metadata standard is refused here, not at the next deploy
    validate_record(restored, f"{display_path(rns.path(full), rns.root)} at version {target.short}")
    rns.write(restored, folder=folder)
    rns.commit(f"rns: rollback {name} to {target.short}", only=[full])
    return restored


def unpin(rns: GitRNS, address: str) -> bool:
    """Drop ``address``'s rollback pin (the next deploy applies the stack file again); commit; whether there was one."""
    folder, name, _ = rns.locate(address)
    record = rns.read(address)
    if "pinned" not in record:
        return False
    rns.write({k: v for k, v in record.items() if k != "pinned"}, folder=folder)
    rns.commit(f"rns: unpin {name}", only=[addresses.address(folder, name)])
    return True


# --- pins at deploy time ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PinNotice:
    """A resource the deploy builds from a rollback pin instead of the stack file's declaration."""

    resource: str
    label: str
    version: str
    declared: dict[str, Any]
    pinned: dict[str, Any]
    by: str

    def __str__(self) -> str:
        declared = ", ".join(f"{k}={json.dumps(v)}" for k, v in self.declared.items())
        pinned = ", ".join(f"{k}={json.dumps(v)}" for k, v in self.pinned.items())
        return (f"{self.label} is pinned to version {self.version[:12]} by rollback ({self.by}): the stack file "
                f"declares {declared}, the pin keeps {pinned}; edit the stack file to match and the pin is dropped, "
                f"or `invoke rns.unpin {self.resource}`.")


def apply_pins(stack: Stack, rns: GitRNS) -> tuple[dict[str, dict[str, Any]], list[PinNotice]]:
    """Rebuild each resource of ``stack`` whose ``~/`` record is pinned from its pinned spec (in place: same name,
    stack, provider and dependencies). Returns the pins still in force (resource name -> pin) and a notice for each;
    a pin whose spec the stack file now declares is not in force (the deploy's record drops it)."""
    from rh_iac.rns.paths import expand, portable
    from rh_iac.rns.schema import build_resource, display_path

    pins: dict[str, dict[str, Any]] = {}
    notices: list[PinNotice] = []
    rebuilt: dict[str, Resource] = {}
    for resource in list(stack):
        path = rns.path(f"{addresses.LOCAL}/{resource.name}")
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_bytes())
        except ValueError:
            continue  # a corrupt record is rewritten by the deploy
        pin = record.get("pinned") if isinstance(record, dict) else None
        if not isinstance(pin, dict) or record.get("stack") != stack.name or record.get("type") != resource.kind:
            continue
        spec = pin.get("spec")
        declared = portable(resource.spec(), rns.root)  # records spell the project folder {project}
        if not isinstance(spec, dict) or spec == declared:
            continue
        try:
            new = build_resource(resource.kind, resource.name, expand(spec, rns.root), resource._provider,
                                 lambda dep: rebuilt.get(dep) or stack[dep])
        except (RhIacError, KeyError) as exc:
            raise RecordFieldError(
                f"{display_path(path, rns.root)}: the rollback pin of {resource.label} (version "
                f"{str(pin.get('version'))[:12]}) is not a spec this stack can deploy ({exc}); drop it with "
                f"`invoke rns.unpin {resource.name}`."
            ) from None
        new.stack = stack
        stack._resources[resource.name] = new
        rebuilt[resource.name] = new
        pins[resource.name] = pin
        keys = [k for k in sorted(set(declared) | set(spec)) if declared.get(k) != spec.get(k)]
        notices.append(PinNotice(resource.name, resource.label, str(pin.get("version")),
                                 {k: declared.get(k) for k in keys}, {k: spec.get(k) for k in keys},
                                 str(pin.get("by", "unknown"))))
    if rebuilt:  # resources that refer to a rebuilt one now refer to its new object
        for resource in stack:
            for attr in ("folder", "env"):
                dep = getattr(resource, attr, None)
                if dep is not None and getattr(dep, "name", None) in rebuilt:
                    setattr(resource, attr, rebuilt[dep.name])
        stack.validate()
    return pins, notices
