"""Groups and access, declared as code: who may write which RNS folder, and the defaults a group's stacks inherit.

The project's groups file is ``stacks/_groups.py`` (beside the stack files, so access changes are reviewed in the same
pull requests; the leading underscore keeps it from being a stack). It is plain Python run like a stack file::

    from rh_iac.rns.groups import Grant, Group

    Group("platform", members=["root@example.com"], access={"/": "write"})
    Group("ml", parent="platform", members=["alice@example.com"],
          access={"/ml": "write", "/shared": "read"},
          defaults={"provider": "local", "autostop_mins": 30, "stage": "dev"})
    Grant("/ml/flights", "carol@example.com", "read")      # what `invoke rns.share` appends

Rules (what :meth:`Groups.level` computes):

- An access key is an RNS path (``/ml``, ``/ml/flights``, ``~``, ``~/sub``); it covers that path and everything under
  it. A user's level on a path is the highest level of any key covering it that the user holds.
- Nesting: the members of a parent group are members of each of its child groups (an ``ml`` stack can be deployed,
  and ``ml``'s folders written, by ``platform``'s members); a child's defaults override its parent's key by key.
- A path no access key covers is open to everyone; a user always has write access to their own folder ``@``
  (``/<user>``, see :mod:`rh_iac.rns.addresses`).
- Users are git author emails (``$RH_IAC_USER_EMAIL``, which RNS commits are then authored with, else
  ``$GIT_AUTHOR_EMAIL``, else ``git config user.email``), compared case-insensitively.

Enforcement: the client refuses writes with :class:`~rh_iac.errors.AccessDeniedError` (:func:`check_write`, called
by remote pushes and by deploy's preflight), and CI runs :func:`check_changes` (``invoke check --base main``) so a
commit touching ``rns/<folder>/`` by an author without write access fails the build. CI judges with the groups file
of the *base* revision, so a pull request cannot grant itself the access it needs.
"""

from __future__ import annotations

import datetime
import os
import re
import runpy
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rh_iac.errors import AccessDeniedError, GroupDeclarationError, UnknownGroupError

#: where a project declares its groups, relative to the project root
GROUPS_FILE = "stacks/_groups.py"
LEVELS = ("read", "write")
#: the defaults a group may give its stacks' resources, and what each must be
DEFAULT_KEYS = ("provider", "region", "storage", "autostop_mins", "stage")
STAGES = ("dev", "prod")

_RANK = {None: 0, "read": 1, "write": 2}
_GROUP_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
_PATH_SEGMENT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")

_collector: ContextVar["list[Group | Grant] | None"] = ContextVar("rh_iac_groups", default=None)
_cache: dict[Path, tuple[tuple[int, int], "Groups"]] = {}


def _access_path(path: object, where: str) -> str:
    """``path`` if it is an access key (``/``, ``/team/...``, ``~``, ``~/...``), else GroupDeclarationError."""
    if isinstance(path, str) and (path in ("/", "~") or path.startswith(("/", "~/"))):
        rest = path.rstrip("/")[2 if path.startswith("~/") else 1:]
        if rest == "" or all(_PATH_SEGMENT_RE.match(p) for p in rest.split("/")):
            return path.rstrip("/") or "/"
    raise GroupDeclarationError(
        f"{where}: {path!r} is not an RNS folder or address; write '/team', '/team/sub', '/team/name' or '~'."
    )


def _level(level: object, where: str) -> str:
    if level not in LEVELS:
        raise GroupDeclarationError(f"{where}: access level {level!r} is unknown; use 'read' or 'write'.")
    return level  # type: ignore[return-value]


def _validate_defaults(defaults: dict[str, Any], where: str) -> dict[str, Any]:
    from rh_iac.model import PROVIDERS

    if not isinstance(defaults, dict):
        raise GroupDeclarationError(f"{where}: defaults must be a dict of {', '.join(DEFAULT_KEYS)}.")
    for key, value in defaults.items():
        bad = None
        if key not in DEFAULT_KEYS:
            bad = f"unknown key {key!r}; the keys a group can set are {', '.join(DEFAULT_KEYS)}"
        elif key == "provider" and value not in PROVIDERS:
            bad = f"provider {value!r} is unknown; choose one of {', '.join(PROVIDERS)}"
        elif key in ("region", "storage") and (not isinstance(value, str) or not value):
            bad = f"{key} must be a non-empty string"
        elif key == "storage" and "://" not in value:
            bad = f"storage {value!r} must be an fsspec URL such as 's3://bucket/ml' or 'file:///data'"
        elif key == "autostop_mins" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                         or not (value == -1 or value > 0)):
            bad = f"autostop_mins must be a positive number of minutes or -1 (never), got {value!r}"
        elif key == "stage" and value not in STAGES:
            bad = f"stage {value!r} must be 'dev' or 'prod'"
        if bad:
            raise GroupDeclarationError(f"{where}: defaults: {bad}.")
    return dict(defaults)


class Group:
    """A group of users (git emails) with access levels per RNS path and defaults for its stacks' resources."""

    def __init__(self, name: str, *, members: list[str] | tuple[str, ...] = (), parent: "str | Group | None" = None,
                 access: dict[str, str] | None = None, defaults: dict[str, Any] | None = None) -> None:
        if not isinstance(name, str) or not _GROUP_RE.match(name):
            raise GroupDeclarationError(
                f"group name {name!r} is invalid: use lowercase letters, digits and '-', starting with a letter."
            )
        self.name = name
        where = f"Group {name!r}"
        if isinstance(members, str) or not all(isinstance(m, str) and _EMAIL_RE.match(m) for m in members):
            raise GroupDeclarationError(f"{where}: members must be a list of email addresses, got {members!r}.")
        self.members = [m.lower() for m in members]
        self.parent = parent.name if isinstance(parent, Group) else parent
        if self.parent is not None and not isinstance(self.parent, str):
            raise GroupDeclarationError(f"{where}: parent must be a group name or a Group.")
        self.access = {_access_path(k, where): _level(v, where) for k, v in (access or {}).items()}
        self.defaults = _validate_defaults(defaults or {}, where)
        collected = _collector.get()
        if collected is not None:
            collected.append(self)

    def __repr__(self) -> str:
        return f"Group({self.name!r}, members={self.members}, parent={self.parent!r})"


@dataclass
class Grant:
    """One extra access entry: ``to`` (a group name or a user's email) gets ``level`` on ``path``.

    :func:`share` appends these to the groups file, so every share is a reviewable line of code."""

    path: str
    to: str
    level: str

    def __post_init__(self) -> None:
        where = f"Grant({self.path!r}, {self.to!r})"
        self.path = _access_path(self.path, where)
        self.level = _level(self.level, where)
        if not isinstance(self.to, str) or not (_EMAIL_RE.match(self.to) or _GROUP_RE.match(self.to)):
            raise GroupDeclarationError(f"{where}: grant to a group name or a user's email address.")
        if "@" in self.to:
            self.to = self.to.lower()
        collected = _collector.get()
        if collected is not None:
            collected.append(self)


def _covers(key: str, path: str) -> bool:
    return path == key or path.startswith(key.rstrip("/") + "/") or (key == "/" and path.startswith("/"))


@dataclass
class Groups:
    """Every group and grant a groups file declares, validated (parents exist, no cycles)."""

    groups: dict[str, Group] = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)
    source: str = GROUPS_FILE

    def __post_init__(self) -> None:
        for group in self.groups.values():
            seen, parent = {group.name}, group.parent
            while parent is not None:
                if parent not in self.groups:
                    raise UnknownGroupError(
                        f"{self.source}: Group {group.name!r} has parent {parent!r}, which is not declared; declare "
                        f"Group({parent!r}, ...) or fix the name (known: {', '.join(sorted(self.groups))})."
                    )
                if parent in seen:
                    raise GroupDeclarationError(f"{self.source}: Group {group.name!r}: its parents form a cycle.")
                seen.add(parent)
                parent = self.groups[parent].parent
        for grant in self.grants:
            if "@" not in grant.to and grant.to not in self.groups:
                raise UnknownGroupError(f"{self.source}: {grant} grants to group {grant.to!r}, which is not declared.")

    def get(self, name: str) -> Group:
        """The group ``name``, or :class:`UnknownGroupError` naming the groups file."""
        if name not in self.groups:
            raise UnknownGroupError(
                f"group {name!r} is not declared in {self.source} (known: {', '.join(sorted(self.groups)) or 'none'});"
                f" declare Group({name!r}, members=[...]) there."
            )
        return self.groups[name]

    def _chain(self, name: str) -> list[Group]:
        """``name`` and its ancestors, nearest first."""
        chain, group = [], self.get(name)
        while True:
            chain.append(group)
            if group.parent is None:
                return chain
            group = self.groups[group.parent]

    def members(self, name: str) -> set[str]:
        """The group's effective members: its own and (transitively) its parents'."""
        return {m for g in self._chain(name) for m in g.members}

    def defaults(self, name: str) -> dict[str, Any]:
        """The defaults a stack of group ``name`` gives its resources: the parents', overridden by the child's."""
        merged: dict[str, Any] = {}
        for group in reversed(self._chain(name)):
            merged.update(group.defaults)
        return merged

    def entries(self) -> Iterator[tuple[str, str, str, str]]:
        """Every access entry: (path, level, group or user it is held by, where it is declared)."""
        for group in self.groups.values():
            for path, level in group.access.items():
                yield path, level, group.name, f"Group {group.name!r}"
        for grant in self.grants:
            yield grant.path, grant.level, grant.to, repr(grant)

    def governed(self, path: str) -> bool:
        """Whether any access entry covers ``path`` (else it is open to everyone)."""
        return any(_covers(key, path) for key, *_ in self.entries())

    def level(self, user: str | None, path: str) -> str | None:
        """The highest level ``user`` holds on ``path`` ("write", "read" or None); see the module's rules."""
        if not self.governed(path):
            return "write"
        if user is None:
            return None
        user = user.lower()
        from rh_iac.rns.addresses import _sanitize

        own = "/" + _sanitize(user.split("@", 1)[0])
        if _covers(own, path):
            return "write"
        best: str | None = None
        for key, level, holder, _ in self.entries():
            if _covers(key, path) and _RANK[level] > _RANK[best]:
                if holder == user or ("@" not in holder and user in self.members(holder)):
                    best = level
        return best

    def writers(self, path: str) -> list[str]:
        """Who holds write access on ``path`` (and so can approve a grant there): ``email (via ...)``, sorted."""
        found: dict[str, str] = {}
        for key, level, holder, _ in self.entries():
            if level == "write" and _covers(key, path):
                for user in ([holder] if "@" in holder else sorted(self.members(holder))):
                    found.setdefault(user, f"group {holder}" if "@" not in holder else "a grant")
        return [f"{u} ({via})" for u, via in sorted(found.items())]

    def denial(self, user: str | None, path: str, required: str = "write") -> AccessDeniedError | None:
        """The :class:`AccessDeniedError` for ``user`` needing ``required`` on ``path``, or None if allowed."""
        have = self.level(user, path)
        if _RANK[have] >= _RANK[required]:
            return None
        who = user or "an unknown user (set RH_IAC_USER_EMAIL or `git config user.email`)"
        writers = self.writers(path)
        return AccessDeniedError(
            f"{who} may not {'write' if required == 'write' else 'read'} {path}: it needs {required!r} access "
            f"and has {have or 'none'}. Access is declared in {self.source}; ask one of "
            f"{', '.join(writers) or 'the maintainers of ' + self.source} to grant it "
            f"(`invoke rns.share {path} {user or '<your email>'} {required}`, then a reviewed pull request)."
        )


@contextmanager
def _collect() -> Iterator[list["Group | Grant"]]:
    found: list[Group | Grant] = []
    token = _collector.set(found)
    try:
        yield found
    finally:
        _collector.reset(token)


def _run_groups_file(path: Path, source: str) -> Groups:
    with _collect() as found:
        try:
            runpy.run_path(str(path), run_name="rh_iac_groups")
        except GroupDeclarationError:
            raise
        except Exception as exc:
            raise GroupDeclarationError(f"{source} failed to run: {type(exc).__name__}: {exc}") from exc
    groups: dict[str, Group] = {}
    for group in (g for g in found if isinstance(g, Group)):
        if group.name in groups:
            raise GroupDeclarationError(f"{source}: Group {group.name!r} is declared twice; merge the two.")
        groups[group.name] = group
    return Groups(groups, [g for g in found if isinstance(g, Grant)], source)


def load_groups(root: str | os.PathLike[str]) -> Groups | None:
    """The groups the project at ``root`` declares in ``stacks/_groups.py``, or None if it has no groups file.

    Cached until the file changes."""
    path = Path(root) / GROUPS_FILE
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _cache.get(path)
    if cached and cached[0] == key:
        return cached[1]
    groups = _run_groups_file(path, str(path))
    _cache[path] = (key, groups)
    return groups


def _project_root() -> Path | None:
    from rh_iac.errors import StackFileError
    from rh_iac.project import Project

    try:
        return Project.find().root
    except StackFileError:
        return None


def defaults_for(group: "str | Group", root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The defaults a stack declared with ``group=`` inherits (:class:`Group` objects: their own defaults).

    A group name is looked up in the groups file of the project at ``root`` (default: :meth:`Project.find`)."""
    if isinstance(group, Group):
        return dict(group.defaults)
    project_root = Path(root) if root is not None else _project_root()
    groups = load_groups(project_root) if project_root is not None else None
    if groups is None:
        raise UnknownGroupError(
            f"group {group!r}: the project has no groups file ({GROUPS_FILE}); declare Group({group!r}, ...) there."
        )
    return groups.defaults(group)


def current_user_email(root: str | os.PathLike[str] | None = None) -> str | None:
    """Who is writing: the email RNS commits are authored with — ``$RH_IAC_USER_EMAIL``, else
    ``$GIT_AUTHOR_EMAIL``, else ``git config user.email`` (in ``root``) — or None."""
    email = os.environ.get("RH_IAC_USER_EMAIL") or os.environ.get("GIT_AUTHOR_EMAIL")
    if email and email.strip():
        return email.strip().lower()
    try:
        out = subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().lower() or None


def _path_of(address: str) -> str:
    from rh_iac.rns.addresses import address as join_address
    from rh_iac.rns.addresses import resolve

    return join_address(*resolve(address))


def check_write(address: str, user: str | None = None, groups: Groups | None = None, *,
                root: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`AccessDeniedError` unless ``user`` (default: :func:`current_user_email`) may write ``address``.

    ``groups`` defaults to the groups file of the project at ``root`` (default: :meth:`Project.find`); a project
    without one has no restrictions."""
    if groups is None:
        root = Path(root) if root is not None else _project_root()
        groups = load_groups(root) if root is not None else None
        if groups is None:
            return
    denied = groups.denial(user or current_user_email(root), _path_of(address))
    if denied is not None:
        raise denied


def check_deploy(root: Path, stack: Any, user: str | None = None, folder: str = "~") -> None:
    """Deploy's preflight: the user may write each record the deploy writes (in ``folder``, where deploys record
    resources), and a stack declared with ``group=`` is deployed by that group's effective members only."""
    from rh_iac.rns.addresses import address

    groups = load_groups(root)
    if groups is None:
        return
    user = user or current_user_email(root)
    for resource in stack:
        denied = groups.denial(user, address(folder, resource.name))
        if denied is not None:
            raise denied
    group = getattr(stack, "group", None)
    if group is None:
        return
    name = group.name if isinstance(group, Group) else group
    if user not in groups.members(name):
        members = ", ".join(sorted(groups.members(name))) or "nobody"
        raise AccessDeniedError(
            f"{user or 'an unknown user (set RH_IAC_USER_EMAIL)'} may not deploy stack {stack.name!r}: it belongs to "
            f"group {name!r}, whose members are {members}. Ask one of them to add you in {groups.source}."
        )


# --- CI: `invoke check --base <ref>` ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Violation:
    """A commit that changed an RNS path its author may not write."""

    commit: str
    author: str
    path: str
    rns_path: str
    level: str | None

    def __str__(self) -> str:
        return (f"{self.commit[:12]} by {self.author}: {self.path} ({self.rns_path}) needs write access, "
                f"author has {self.level or 'none'}")


def _rns_path(file: str, rns_dir: str) -> str | None:
    """The RNS address a repository path holds (``rns/_folders/ml/x.json`` -> ``/ml/x``), or None if not RNS."""
    from rh_iac.rns.addresses import folder_of_dir

    rel = PurePosixPath(file)
    if not file.startswith(rns_dir + "/") or rel.suffix != ".json":
        return None
    inner = rel.relative_to(rns_dir)
    folder = folder_of_dir(Path("/rns"), Path("/rns", *inner.parent.parts))
    return f"{folder}/{inner.stem}" if folder != "/" else f"/{inner.stem}"


def check_changes(base: str, head: str = "HEAD", root: str | os.PathLike[str] | None = None,
                  rns_dir: str = "rns") -> list[Violation]:
    """Every commit in ``base..head`` that touches an RNS record its author (git email) may not write.

    Access is judged by the groups file as it is at ``base``; without one there, nothing is restricted."""
    import git

    root = Path(root) if root is not None else (_project_root() or Path.cwd())
    repo = git.Repo(root, search_parent_directories=True)
    for ref in (base, head):  # an unknown revision must fail the check, never pass it (a shallow CI clone...)
        try:
            repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
        except git.GitCommandError:
            raise GroupDeclarationError(
                f"access check: revision {ref!r} is not a commit of {repo.working_tree_dir}; fetch it (in CI: "
                f"`git fetch origin main` and a clone deep enough to hold it) and pass it with --base."
            ) from None
    try:
        source = repo.git.show(f"{base}:{GROUPS_FILE}")
    except git.GitCommandError:
        return []  # no groups file at the base: nothing is restricted
    with tempfile.TemporaryDirectory(prefix="rh_iac-groups-") as tmp:
        path = Path(tmp) / "_groups.py"
        path.write_text(source)
        groups = _run_groups_file(path, f"{GROUPS_FILE} at {base}")
    violations = []
    for commit in repo.iter_commits(f"{base}..{head}", reverse=True):
        parent = commit.parents[0] if commit.parents else git.NULL_TREE
        diffs = commit.diff(parent) if commit.parents else commit.diff(git.NULL_TREE)
        files = {p for d in diffs for p in (d.a_path, d.b_path) if p}
        for file in sorted(files):
            rns_path = _rns_path(file, rns_dir)
            if rns_path is None:
                continue
            level = groups.level(commit.author.email, rns_path)
            if level != "write":
                violations.append(Violation(commit.hexsha, commit.author.email or "?", file, rns_path, level))
    return violations


# --- sharing, as code ---------------------------------------------------------------------------------------------
def share(target: str, to: str, level: str = "read", *, root: str | os.PathLike[str] | None = None,
          user: str | None = None) -> str | None:
    """Grant ``to`` (a group name or an email) ``level`` on ``target`` (an RNS folder or address), as code.

    Appends a :class:`Grant` line to ``stacks/_groups.py`` (creating the file if needed) and returns it, or None if
    the access is already held (a path no group declares access to is open to everyone). The change is left for a
    reviewed commit; the sharer needs write access to the target themselves (else :class:`AccessDeniedError`)."""
    root = Path(root) if root is not None else _project_root()
    if root is None:
        raise GroupDeclarationError("rns.share needs a project (a folder with stacks/); run it inside one.")
    path = target if target in ("/", "~") or target.startswith(("/", "~/")) else _path_of(target)
    grant = Grant(path, to, level)  # validates; outside a collector it registers nowhere
    groups = load_groups(root) or Groups()
    if "@" not in grant.to:
        groups.get(grant.to)
    sharer = user or current_user_email(root)
    denied = groups.denial(sharer, grant.path)
    if denied is not None:
        raise denied
    if not groups.governed(grant.path):
        return None  # open to everyone already; a grant would close it to all others
    if "@" in grant.to:
        held = _RANK[groups.level(grant.to, grant.path)] >= _RANK[grant.level]
    else:
        held = any(holder == grant.to and _covers(key, grant.path) and _RANK[lvl] >= _RANK[grant.level]
                   for key, lvl, holder, _ in groups.entries())
    if held:
        return None
    file = root / GROUPS_FILE
    text = file.read_text() if file.is_file() else '"""Groups and access (see rh_iac.rns.groups)."""\n'
    if not re.search(r"^from rh_iac\.rns\.groups import .*\bGrant\b", text, re.MULTILINE):
        text = text.rstrip("\n") + "\n\nfrom rh_iac.rns.groups import Grant\n"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    line = f"Grant({grant.path!r}, {grant.to!r}, {grant.level!r})  # shared by {sharer} on {stamp}"
    file.write_text(text.rstrip("\n") + "\n" + line + "\n")
    return line

