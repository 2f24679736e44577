"""RNS addresses: how a name written by a user (``dev-cluster``, ``~/dev-cluster``, ``@/scratch``, ``/team/sub/x``)
becomes a folder and a name, and where that folder's records live on disk.

Address forms:

- ``name`` or ``sub/name``: relative to the current folder (default ``~``; set it with :func:`set_folder` or the
  ``RH_IAC_RNS_FOLDER`` environment variable);
- ``~/name``: this repository's local RNS (``rns/<name>.json``; nested: ``~/sub/name`` is ``rns/sub/name.json``);
- ``@/name``: the user's own folder, which is the top-level folder ``/<user>`` (so ``@/x`` is ``/alice/x`` for
  alice). The user is ``$RH_IAC_USER``, else the local part of ``git config user.email``, else ``$USER``, sanitized
  to a valid name (lowercased, other characters turned into ``-``);
- ``/team/name``, ``/team/sub/name``: a group's folder, nestable.

Canonical folders are ``~``, ``~/a/b``, ``/team`` and ``/team/a/b``. On disk ``~`` is the RNS directory itself and an
absolute folder ``/t/s`` is ``<rns>/_folders/t/s/``: record and folder names start with a letter or digit, so the
``_folders`` directory can never collide with a record or a ``~`` sub-folder.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from rh_iac.errors import InvalidAddressError

#: a record's name, and each folder segment
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
#: the directory, under the RNS directory, holding the absolute folders (``/team/...``)
ABSOLUTE_DIR = "_folders"
LOCAL = "~"

_folder: str | None = None
_git_user: str | None = None


def validate_name(name: object, what: str = "RNS name") -> str:
    """``name`` if it is a valid record or folder name, else :class:`InvalidAddressError`."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise InvalidAddressError(
            f"{what} {name!r} is invalid: use lowercase letters, digits, '-', '_' and '.', starting with a letter "
            "or digit (at most 128 characters)."
        )
    return name


def _sanitize(user: str) -> str:
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", user.strip().lower()).strip("-._").replace("..", ".")
    return cleaned[:128]


def current_user() -> str:
    """The user whose folder ``@`` is: ``$RH_IAC_USER``, else git's user.email local part, else ``$USER``."""
    global _git_user
    user = os.environ.get("RH_IAC_USER")
    if not user:
        if _git_user is None:
            try:
                email = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True,
                                       timeout=10).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                email = ""
            _git_user = email.split("@", 1)[0]
        user = _git_user or os.environ.get("USER", "")
    cleaned = _sanitize(user)
    if not cleaned or not NAME_RE.match(cleaned):
        raise InvalidAddressError(
            f"cannot tell whose folder '@' is (user {user!r}): set RH_IAC_USER to your user name, or "
            "`git config user.email`."
        )
    return cleaned


def _segments(text: str, address: str) -> list[str]:
    parts = text.split("/")
    if any(p == "" for p in parts):
        raise InvalidAddressError(f"RNS address {address!r} has an empty path segment; write e.g. '/team/name'.")
    return [validate_name(p, f"segment {p!r} of RNS address {address!r}: the name") for p in parts]


def canonical_folder(folder: str) -> str:
    """``folder`` in canonical form: ``~``, ``~/a``, ``/team``, ``/team/a`` (``@`` becomes ``/<user>``)."""
    if not isinstance(folder, str) or not folder:
        raise InvalidAddressError(f"RNS folder {folder!r} is invalid: use '~', '@', '/team' or '~/sub'.")
    text = folder
    if text == "/":
        return "/"
    if text == LOCAL:
        return LOCAL
    if text.startswith("~/"):
        return LOCAL + "/" + "/".join(_segments(text[2:], folder))
    if text == "@" or text.startswith("@/"):
        rest = text[2:]
        return "/" + current_user() + ("/" + "/".join(_segments(rest, folder)) if rest else "")
    if text.startswith("/"):
        return "/" + "/".join(_segments(text[1:], folder))
    return join(current_folder(), text)


def join(folder: str, relative: str) -> str:
    """The canonical folder ``relative`` (``a/b``) names inside canonical ``folder``."""
    return ("" if folder == "/" else folder) + "/" + "/".join(_segments(relative, relative))


def set_folder(folder: str | None) -> str:
    """Make ``folder`` the current folder that bare names resolve in (None: back to ``$RH_IAC_RNS_FOLDER`` or
    ``~``); return the canonical folder now current."""
    global _folder
    if folder is None:
        _folder = None
    else:
        canonical = canonical_folder(folder)  # validates
        _folder = folder if folder == "@" or folder.startswith("@/") else canonical  # '@' follows RH_IAC_USER
    return current_folder()


def current_folder() -> str:
    """The canonical folder bare names resolve in: :func:`set_folder`'s, else ``$RH_IAC_RNS_FOLDER``, else ``~``."""
    folder = _folder or os.environ.get("RH_IAC_RNS_FOLDER") or LOCAL
    if folder == LOCAL:
        return LOCAL
    if not folder.startswith(("~", "/", "@")):
        raise InvalidAddressError(
            f"RH_IAC_RNS_FOLDER={folder!r} is not a folder: use '~', '~/sub', '@', '@/sub' or '/team/sub'."
        )
    return canonical_folder(folder)


def resolve(address: str, folder: str | None = None) -> tuple[str, str]:
    """``(canonical folder, name)`` of ``address``; a relative address resolves in ``folder`` (default: the
    current folder). Raises :class:`InvalidAddressError` for a malformed address."""
    if not isinstance(address, str) or not address or address.endswith("/"):
        raise InvalidAddressError(
            f"RNS address {address!r} is invalid: give a name ('dev-cluster') or a path ending in one "
            "('~/dev-cluster', '@/scratch', '/team/dev-cluster')."
        )
    head, _, name = address.rpartition("/")
    validate_name(name, f"the name in RNS address {address!r}")
    if not head and "/" not in address:
        return (canonical_folder(folder) if folder else current_folder()), name
    if head == "" and address.startswith("/"):
        raise InvalidAddressError(f"RNS address {address!r} names no folder: write '/team/{name}' or '~/{name}'.")
    if head in (LOCAL, "@") or head.startswith(("~/", "@/", "/")):
        return canonical_folder(head), name
    return join(canonical_folder(folder) if folder else current_folder(), head), name


def address(folder: str, name: str) -> str:
    """The full address of ``name`` in canonical ``folder``: ``~/dev-cluster``, ``/team/sub/x``."""
    return f"{folder}/{name}" if folder != "/" else f"/{name}"


def folder_dir(rns_dir: Path, folder: str) -> Path:
    """The directory holding canonical ``folder``'s records (``~`` = ``rns_dir``; ``/t`` = ``rns_dir/_folders/t``)."""
    if folder == LOCAL:
        return rns_dir
    if folder.startswith("~/"):
        return rns_dir.joinpath(*folder[2:].split("/"))
    if folder == "/":
        return rns_dir / ABSOLUTE_DIR
    return rns_dir.joinpath(ABSOLUTE_DIR, *folder[1:].split("/"))


def folder_of_dir(rns_dir: Path, directory: Path) -> str:
    """The canonical folder a directory under ``rns_dir`` holds (the inverse of :func:`folder_dir`)."""
    parts = directory.relative_to(rns_dir).parts
    if not parts:
        return LOCAL
    if parts[0] == ABSOLUTE_DIR:
        return "/" + "/".join(parts[1:]) if len(parts) > 1 else "/"
    return LOCAL + "/" + "/".join(parts)
