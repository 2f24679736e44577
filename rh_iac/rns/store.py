"""The git-backed Resource Naming System store: one JSON record per resource, in folders, committed beside the stacks.

Layout (see :mod:`rh_iac.rns.addresses` for the address forms)::

    <root>/rns/<name>.json                     ~/<name>: this repository's local RNS (what deploys record)
    <root>/rns/<sub>/<name>.json               ~/<sub>/<name>: a nested local folder
    <root>/rns/_folders/<team>/<name>.json     /<team>/<name>: a group's folder (nestable: /<team>/<sub>/<name>)
    <root>/rns/_folders/<user>/<name>.json     @/<name>: the user's own folder, /<user>

Records are written with sorted keys, 2-space indent and a trailing newline, so infra changes show up as reviewable
diffs. Reading by address is one path lookup (no directory scan) unless the name is not where the address says.
:meth:`GitRNS.commit` commits only the RNS files: it builds the commit from a temporary index, so a user's other
staged or unstaged changes are never included, and their index is left as it was. History, diffs and rollback are
in :mod:`rh_iac.rns.history`.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import git

from rh_iac.errors import AmbiguousNameError, RecordCorruptError, ResourceNotFoundError, RNSError
from rh_iac.files import write_atomic
from rh_iac.rns import addresses
from rh_iac.rns.schema import refuse_secret_value

if TYPE_CHECKING:  # pragma: no cover
    from rh_iac.rns.history import RecordDiff, Version

_FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "rh_iac",
    "GIT_AUTHOR_EMAIL": "rh_iac@localhost",
    "GIT_COMMITTER_NAME": "rh_iac",
    "GIT_COMMITTER_EMAIL": "rh_iac@localhost",
}


def serialize(record: dict[str, Any]) -> bytes:
    """A record as its file holds it: sorted keys, 2-space indent, trailing newline."""
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def parse(data: bytes | str, where: str, name: str | None = None) -> dict[str, Any]:
    """The record in ``data`` (a file's content); :class:`RecordCorruptError` naming ``where`` if it is not one."""
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordCorruptError(f"RNS record file {where} is not valid JSON ({exc}): fix it or restore it from git "
                                 f"history (`invoke rns.rollback {name or '<name>'} 1`).") from exc
    if not isinstance(record, dict):
        raise RecordCorruptError(f"RNS record file {where} must hold a JSON object: fix it or restore it from git.")
    for field in ("name", "type"):
        if not isinstance(record.get(field), str) or not record[field]:
            raise RecordCorruptError(
                f"RNS record file {where} lacks the {field!r} field: fix it or restore it from git history."
            )
    if name is not None and record["name"] != name:
        raise RecordCorruptError(
            f"RNS record file {where} holds name {record['name']!r}, not {name!r}: rename the file or fix the field."
        )
    return record


class GitRNS:
    """RNS records as JSON files under ``<root>/<folder>/``, where ``root`` lies inside a git working tree."""

    def __init__(self, root: Path, folder: str = "rns") -> None:
        self.root = Path(root)
        self.dir = self.root / folder

    def __repr__(self) -> str:
        return f"GitRNS(dir={str(self.dir)!r})"

    # --- addresses --------------------------------------------------------------------------------------------------
    def path(self, address: str, folder: str | None = None) -> Path:
        """The file that holds (or would hold) ``address``'s record; relative addresses resolve in ``folder``."""
        where, name = addresses.resolve(address, folder)
        return addresses.folder_dir(self.dir, where) / f"{name}.json"

    def locate(self, address: str, folder: str | None = None) -> tuple[str, str, Path]:
        """``(canonical folder, name, file)`` of the record ``address`` names.

        A bare name not in the current folder falls back to the one other folder holding it; raises
        :class:`ResourceNotFoundError` (with close matches) or :class:`AmbiguousNameError` (with the candidates).
        """
        where, name = addresses.resolve(address, folder)
        path = addresses.folder_dir(self.dir, where) / f"{name}.json"
        if path.is_file():
            return where, name, path
        searched = [where]
        if "/" not in address:
            found = [p for p in self.dir.rglob(f"{name}.json") if p.is_file() and p != path]
            if len(found) == 1:
                return addresses.folder_of_dir(self.dir, found[0].parent), name, found[0]
            if found:
                candidates = sorted(addresses.address(addresses.folder_of_dir(self.dir, p.parent), name)
                                    for p in found)
                raise AmbiguousNameError(
                    f"RNS name {name!r} is not in the current folder {where!r} and is in several others: "
                    f"{', '.join(candidates)}; give the full address."
                )
            searched.append("every other folder")
        known = self.addresses()
        by_name: dict[str, list[str]] = {}
        for full in known:
            by_name.setdefault(full.rsplit("/", 1)[1], []).append(full)
        close = [full for match in difflib.get_close_matches(name, list(by_name), n=3) for full in by_name[match]][:5]
        shown = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
        hint = (f"; close matches: {', '.join(close)}" if close else "") + f" (known: {shown or 'none'})"
        raise ResourceNotFoundError(
            f"no RNS record for {address!r} (searched {' and '.join(searched)} in {self.dir}){hint}. Deploy the stack "
            f"that declares it, or check the name with `invoke rns.ls`."
        )

    # --- records --------------------------------------------------------------------------------------------------
    def write(self, record: dict[str, Any], folder: str | None = None) -> bool:
        """Write ``record`` (it needs "name" and "type") into ``folder`` (default: the current folder) if the
        content changed; return whether it did. A record holding a secret value is refused."""
        if not isinstance(record, dict):
            raise RNSError(f"an RNS record must be a dict, got {type(record).__name__}.")
        for field in ("name", "type"):
            if not isinstance(record.get(field), str) or not record[field]:
                raise RNSError(f"RNS record {record.get('name')!r} needs a non-empty string {field!r} field.")
        where = addresses.canonical_folder(folder) if folder else addresses.current_folder()
        path = addresses.folder_dir(self.dir, where) / f"{addresses.validate_name(record['name'])}.json"
        refuse_secret_value(record, str(path))
        try:
            data = serialize(record)
        except (TypeError, ValueError) as exc:
            raise RNSError(
                f"RNS record {record['name']!r} is not JSON-serializable: {exc}; use plain JSON values."
            ) from exc
        if path.is_file() and path.read_bytes() == data:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
        return True

    def remove(self, address: str) -> bool:
        """Delete the record ``address`` names (no fallback to other folders); return whether it existed."""
        try:
            self.path(address).unlink()
        except FileNotFoundError:
            return False
        return True

    def read(self, address: str, folder: str | None = None) -> dict[str, Any]:
        """The record ``address`` names (relative addresses resolve in ``folder``, default the current folder).

        Raises :class:`ResourceNotFoundError` if there is none, :class:`AmbiguousNameError` if a bare name is only in
        several other folders, :class:`RecordCorruptError` if its file is unreadable.
        """
        _, name, path = self.locate(address, folder)
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # removed since it was located
            raise ResourceNotFoundError(f"no RNS record for {address!r}: {path} was just removed.") from None
        return parse(data, str(path), name)

    def list(self, folder: str | None = None, recursive: bool = False) -> list[str]:
        """The records of ``folder`` (default: the current folder), sorted: bare names, and with ``recursive``
        also ``sub/name`` for records of nested folders (each resolves back with ``read(x, folder=folder)``)."""
        where = addresses.canonical_folder(folder) if folder else addresses.current_folder()
        base = addresses.folder_dir(self.dir, where)
        if not base.is_dir():
            return []
        if not recursive:
            return sorted(p.stem for p in base.glob("*.json") if p.is_file() and not p.name.startswith("."))
        found = []
        for dirpath, dirnames, filenames in os.walk(base):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")
                           and not (here == self.dir and d == addresses.ABSOLUTE_DIR)]
            rel = here.relative_to(base).as_posix()
            found += [(f[:-5] if rel == "." else f"{rel}/{f[:-5]}") for f in filenames
                      if f.endswith(".json") and not f.startswith(".")]
        return sorted(found)

    def addresses(self) -> list[str]:
        """The full address of every record in the store (``~/...`` first, then ``/group/...``), sorted."""
        local = [addresses.address(addresses.LOCAL, a) for a in self.list(addresses.LOCAL, recursive=True)]
        groups = [addresses.address("/", a) for a in self.list("/", recursive=True)]
        return local + groups

    def records(self, folder: str | None = None) -> list[tuple[str, dict[str, Any] | RecordCorruptError]]:
        """``(full address, record)`` of every record under ``folder`` (default: the whole store), sorted; a record
        whose file is unreadable comes with its :class:`RecordCorruptError` instead, so a listing never stops."""
        if folder is None:
            found = self.addresses()
        else:
            where = addresses.canonical_folder(folder)
            found = [addresses.address(where, a) for a in self.list(where, recursive=True)]
        out: list[tuple[str, dict[str, Any] | RecordCorruptError]] = []
        for full in found:
            try:
                out.append((full, self.read(full)))
            except RecordCorruptError as exc:
                out.append((full, exc))
        return out

    # --- history (see rh_iac.rns.history) ----------------------------------------------------------------------
    def history(self, address: str) -> list[Version]:
        """The versions of ``address``'s record, newest first (see :func:`rh_iac.rns.history.history`)."""
        from rh_iac.rns import history

        return history.history(self, address)

    def read_at(self, address: str, version: str | int) -> dict[str, Any]:
        """The record as it was at ``version`` (a commit sha prefix, or an index: 0 newest, 1 the one before)."""
        from rh_iac.rns import history

        return history.read_at(self, address, version)

    def diff(self, address: str, v1: str | int = 1, v2: str | int | None = None) -> RecordDiff:
        """The field-level diff of ``address``'s record from ``v1`` to ``v2`` (default: the current file)."""
        from rh_iac.rns import history

        return history.diff(self, address, v1, v2)

    def rollback(self, address: str, version: str | int) -> dict[str, Any]:
        """Restore ``address``'s record to ``version`` and pin its spec so the next deploy applies it; commits."""
        from rh_iac.rns import history

        return history.rollback(self, address, version)

    def unpin(self, address: str) -> bool:
        """Drop a rollback pin: the next deploy applies the stack file's declaration again; commits."""
        from rh_iac.rns import history

        return history.unpin(self, address)

    # --- git --------------------------------------------------------------------------------------------------------
    def ensure_repo(self) -> None:
        """Raise :class:`RNSError` unless the records' folder lies in a git working tree (checked before deploys)."""
        self._repo()

    def _repo(self) -> git.Repo:
        try:
            return git.Repo(self.root, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise RNSError(f"RNS directory {self.dir} is not inside a git working tree: run `git init` there.") from exc

    def _relpath(self, repo: git.Repo) -> str:
        if repo.working_tree_dir is None:
            raise RNSError(f"the git repository of {self.dir} is bare: use a working tree.")
        rel = os.path.relpath(self.dir.resolve(), Path(repo.working_tree_dir).resolve())
        if rel == "." or rel.startswith(".."):
            raise RNSError(
                f"RNS directory {self.dir} must be a subdirectory of the working tree {repo.working_tree_dir}."
            )
        return Path(rel).as_posix()

    @contextlib.contextmanager
    def _lock(self, repo: git.Repo) -> Iterator[None]:
        with open(Path(repo.git_dir) / "rh_iac-rns.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _identity_env(repo: git.Repo) -> dict[str, str]:
        """The commit's author: ``$RH_IAC_USER_EMAIL`` when set (the identity access checks judge, see
        :func:`rh_iac.rns.groups.current_user_email`), else git's own; a fallback identity when git has none. The
        user's git config is never changed."""
        override = {"GIT_AUTHOR_EMAIL": os.environ["RH_IAC_USER_EMAIL"].strip()} if os.environ.get(
            "RH_IAC_USER_EMAIL", "").strip() else {}
        try:
            repo.git.var("GIT_AUTHOR_IDENT", env=override)
            repo.git.var("GIT_COMMITTER_IDENT")
            return override
        except git.GitCommandError:
            return {**{k: v for k, v in _FALLBACK_IDENTITY.items() if k not in os.environ}, **override}

    @staticmethod
    def _start_index(repo: git.Repo, head: str | None, env: dict[str, str]) -> None:
        """Fill the temporary index with HEAD's tree. Starting from a copy of the real index keeps its cached stat
        data (``read-tree -m`` reuses it for unchanged paths), so ``git add`` need not re-hash every record."""
        index = Path(repo.git_dir) / "index"
        if head is not None and index.is_file():
            try:
                shutil.copyfile(index, env["GIT_INDEX_FILE"])
                repo.git.read_tree("-m", head, env=env)
                return
            except (OSError, git.GitCommandError):
                pass  # e.g. an index in the middle of a merge: start from the tree alone
        Path(env["GIT_INDEX_FILE"]).unlink(missing_ok=True)
        repo.git.read_tree(head or "--empty", env=env)

    def commit(self, message: str, only: Iterable[str] | None = None) -> str | None:
        """Commit the changes under the RNS directory (only those) and return the commit's hexsha, or None if none.

        ``only`` (addresses) narrows the commit to those records: a run or a rollback commits its own record, never
        someone's uncommitted edit of another. The user's other staged and unstaged changes are neither committed
        nor disturbed; the index entries under the RNS directory are refreshed to the new commit. Concurrent callers
        are serialized with a lock in the git dir.
        """
        if not isinstance(message, str) or not message.strip():
            raise RNSError(f"an RNS commit in {self.dir} needs a non-empty message.")
        repo = self._repo()
        rel = self._relpath(repo)
        pathspec = [rel, f":(exclude){rel}/*.tmp"]
        if only is not None:
            files = [f"{rel}/{self.path(a).relative_to(self.dir).as_posix()}" for a in only]
            tracked = set(repo.git.ls_files("--", *files).splitlines()) if files else set()
            pathspec = [f for f in files if f in tracked or (Path(repo.working_tree_dir) / f).exists()]
            if not pathspec:
                return None
        with self._lock(repo), tempfile.TemporaryDirectory(prefix="rh_iac-rns-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            try:
                head = repo.head.commit.hexsha if repo.head.is_valid() else None
                self._start_index(repo, head, env)
                if only is not None or self.dir.exists() or repo.git.ls_files("--", rel, env=env):  # else no path
                    repo.git.add("-A", "--", *pathspec, env=env)
                if head is None and not repo.git.ls_files(env=env):
                    return None
                tree = repo.git.write_tree(env=env)
                if head is not None and tree == repo.head.commit.tree.hexsha:
                    return None
                parents = ["-p", head] if head else []
                new = repo.git.commit_tree(tree, *parents, "-m", message, env=self._identity_env(repo))
                repo.git.update_ref("-m", f"rh_iac rns: {message.strip().splitlines()[0]}", "HEAD", new, head or "")
            except git.GitCommandError as exc:
                raise RNSError(f"could not commit RNS records in {self.dir}: {exc.stderr.strip() or exc}") from exc
            try:
                repo.git.reset("-q", "--", rel)  # the real index: refresh only the RNS entries
            except git.GitCommandError as exc:
                raise RNSError(
                    f"committed RNS records as {new[:12]}, but could not refresh the index for {rel}: "
                    f"{exc.stderr.strip() or exc}; run `git reset -q -- {rel}`."
                ) from exc
        return new
