"""Local storage driver: folders are directories, tables are parquet dataset directories inside a folder.

Plain Python with the Terraform contract in mind: ``create`` returns the computed attributes, ``read`` reports
reality (``None`` when the directory is gone, so the next plan re-creates it), ``delete`` removes what was created.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse


def folder_path(name: str, path: str | None, state_dir: Path, project_dir: Path) -> Path:
    """Where a local folder lives: its declared path (relative to the project), else inside the stack's state."""
    if path:
        p = Path(urlparse(path).path if path.startswith("file://") else path).expanduser()
        return p if p.is_absolute() else (Path(project_dir) / p).resolve()
    return Path(state_dir) / "folders" / name


def url_to_path(url: str) -> Path:
    return Path(urlparse(url).path)


def create_folder(name: str, path: str | None, state_dir: Path, project_dir: Path) -> dict:
    target = folder_path(name, path, state_dir, project_dir)
    existed = target.exists()
    target.mkdir(parents=True, exist_ok=True)
    return {"url": target.as_uri(), "created": not existed}


def read_folder(state: dict) -> dict | None:
    return state if url_to_path(state["url"]).is_dir() else None


def delete_folder(state: dict) -> None:
    """Remove the directory if this resource created it; a pre-existing user directory is left in place."""
    if state.get("created", True):
        shutil.rmtree(url_to_path(state["url"]), ignore_errors=True)


def create_table(name: str, folder_url: str) -> dict:
    """A table is a directory inside its folder; data already there is adopted, and kept on delete."""
    folder = url_to_path(folder_url)
    if not folder.is_dir():
        raise FileNotFoundError(f"table {name!r}: its folder {folder_url} does not exist; deploy the folder first")
    return {"url": (folder / name).as_uri(), "created": not (folder / name).exists()}


def read_table(state: dict) -> dict | None:
    # A table is only as present as its folder; its data directory appears on the first write.
    return state if url_to_path(state["url"]).parent.is_dir() else None


def delete_table(state: dict) -> None:
    """Remove the table's data if this resource created the directory; adopted data is left in place."""
    if state.get("created"):
        shutil.rmtree(url_to_path(state["url"]), ignore_errors=True)
