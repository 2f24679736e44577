"""How RNS records spell the project folder: ``{project}``, so a record reads the same on every checkout.

:func:`portable` writes paths and ``file://`` URLs inside the project relative to it before a record is saved;
:func:`expand` makes them usable again in the checkout that loads the record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROJECT_PLACEHOLDER = "{project}"


def _spellings(root: Path) -> list[tuple[str, str]]:
    """(how this machine writes the project folder, how a record writes it), longest first."""
    folders = sorted({str(root), str(root.resolve())}, key=len, reverse=True)
    return ([(Path(f).as_uri(), "file://" + PROJECT_PLACEHOLDER) for f in folders]
            + [(f, PROJECT_PLACEHOLDER) for f in folders])


def portable(value: Any, root: Path | None, *, anywhere: bool = False) -> Any:
    """``value`` (JSON-like) with the project folder written as ``{project}``.

    Strings that are, or start with, the folder are rewritten; with ``anywhere=True`` (free text such as a plan's
    attribute values) every occurrence is."""
    if root is None:
        return value
    if isinstance(value, dict):
        return {k: portable(v, root, anywhere=anywhere) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, root, anywhere=anywhere) for v in value]
    if isinstance(value, str):
        for prefix, replacement in _spellings(Path(root)):
            if anywhere:
                value = value.replace(prefix, replacement)
            elif value == prefix or value.startswith(prefix + "/"):
                return replacement + value[len(prefix):]
    return value


def expand(value: Any, root: Path) -> Any:
    """The inverse of :func:`portable`: ``{project}`` (and ``file://{project}``) become this checkout's folder."""
    if isinstance(value, dict):
        return {k: expand(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, root) for v in value]
    if isinstance(value, str):
        for prefix, replacement in (("file://" + PROJECT_PLACEHOLDER, Path(root).as_uri()),
                                    (PROJECT_PLACEHOLDER, str(root))):
            if value == prefix or value.startswith(prefix + "/"):
                return replacement + value[len(prefix):]
    return value
