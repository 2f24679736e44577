"""The git-backed Resource Naming System store: one JSON record per resource name, committed beside the stacks.

Records live in ``<root>/<folder>/<name>.json`` (sorted keys, 2-space indent, trailing newline) so infra changes show
up as reviewable diffs. :meth:`GitRNS.commit` commits only those files: it builds the commit from a temporary index,
so a user's other staged or unstaged changes are never included, and their index is left as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import git

from rh_iac.errors import RecordCorruptError, ResourceNotFoundError, RNSError

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "rh_iac",
    "GIT_AUTHOR_EMAIL": "rh_iac@localhost",
    "GIT_COMMITTER_NAME": "rh_iac",
    "GIT_COMMITTER_EMAIL": "rh_iac@localhost",
}


def _validate_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise RNSError(
            f"RNS name {name!r} is invalid: use lowercase letters, digits, '-', '_' and '.', starting with a letter "
            "or digit (at most 128 characters)."
        )
    return name


def _serialize(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


class GitRNS:
    """RNS records as JSON files in ``<root>/<folder>/``, where ``root`` lies inside a git working tree."""

    def __init__(self, root: Path, folder: str = "rns") -> None:
        self.root = Path(root)
        self.dir = self.root / folder

    def __repr__(self) -> str:
        return f"GitRNS(dir={str(self.dir)!r})"

    def _path(self, name: str) -> Path:
        return self.dir / f"{_validate_name(name)}.json"

    # --- records --------------------------------------------------------------------------------------------------
    def write(self, record: dict[str, Any]) -> bool:
        """Write ``record`` (it needs "name" and "type") to its file if the content changed; return whether it did."""
        if not isinstance(record, dict):
            raise RNSError(f"an RNS record must be a dict, got {type(record).__name__}.")
        for field in ("name", "type"):
            if not isinstance(record.get(field), str) or not record[field]:
                raise RNSError(f"RNS record {record.get('name')!r} needs a non-empty string {field!r} field.")
        path = self._path(record["name"])
        try:
            data = _serialize(record)
        except (TypeError, ValueError) as exc:
            raise RNSError(
                f"RNS record {record['name']!r} is not JSON-serializable: {exc}; use plain JSON values."
            ) from exc
        if path.is_file() and path.read_bytes() == data:
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def remove(self, name: str) -> bool:
        """Delete the record for ``name``; return whether it existed."""
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def read(self, name: str) -> dict[str, Any]:
        """The record for ``name``.

        Raises :class:`ResourceNotFoundError` if there is none, :class:`RecordCorruptError` if its file is unreadable.
        """
        path = self._path(name)
        if not path.is_file():
            known = self.list()
            shown = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
            raise ResourceNotFoundError(
                f"no RNS record for {name!r} in {self.dir}; deploy the stack that declares it or check the name "
                f"(known: {shown or 'none'})"
            )
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecordCorruptError(
                f"RNS record file {path} is not valid JSON ({exc}): fix it or restore it from git history."
            ) from exc
        if not isinstance(record, dict):
            raise RecordCorruptError(f"RNS record file {path} must hold a JSON object: fix it or restore it from git.")
        for field in ("name", "type"):
            if not isinstance(record.get(field), str) or not record[field]:
                raise RecordCorruptError(
                    f"RNS record file {path} lacks the {field!r} field: fix it or restore it from git history."
                )
        if record["name"] != name:
            raise RecordCorruptError(
                f"RNS record file {path} holds name {record['name']!r}, not {name!r}: rename the file or fix the field."
            )
        return record

    def list(self) -> list[str]:
        """The names that have a record, sorted."""
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if p.is_file() and not p.name.startswith("."))

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
        """Fallback author/committer env when git has no identity; the user's git config is never changed."""
        try:
            repo.git.var("GIT_AUTHOR_IDENT")
            repo.git.var("GIT_COMMITTER_IDENT")
            return {}
        except git.GitCommandError:
            return {k: v for k, v in _FALLBACK_IDENTITY.items() if k not in os.environ}

    def commit(self, message: str) -> str | None:
        """Commit the changes under the RNS directory (only those) and return the commit's hexsha, or None if none.

        The user's other staged and unstaged changes are neither committed nor disturbed; the index entries under the
        RNS directory are refreshed to the new commit. Concurrent callers are serialized with a lock in the git dir.
        """
        if not isinstance(message, str) or not message.strip():
            raise RNSError(f"an RNS commit in {self.dir} needs a non-empty message.")
        repo = self._repo()
        rel = self._relpath(repo)
        pathspec = [rel, f":(exclude){rel}/*.tmp"]
        with self._lock(repo), tempfile.TemporaryDirectory(prefix="rh_iac-rns-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            try:
                head = repo.head.commit.hexsha if repo.head.is_valid() else None
                repo.git.read_tree(head or "--empty", env=env)
                if self.dir.exists() or repo.git.ls_files("--", rel, env=env):  # else git add finds no such path
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

    def history(self, name: str) -> list[dict[str, str]]:
        """The commits that touched ``name``'s record, newest first: hexsha, author, time (ISO 8601), message."""
        repo = self._repo()
        rel = f"{self._relpath(repo)}/{_validate_name(name)}.json"
        if not repo.head.is_valid():
            return []
        return [
            {
                "hexsha": c.hexsha,
                "author": f"{c.author.name} <{c.author.email}>",
                "time": c.committed_datetime.isoformat(),
                "message": c.message.strip(),
            }
            for c in repo.iter_commits(paths=rel)
        ]
