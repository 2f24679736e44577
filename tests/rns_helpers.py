"""Helpers for the RNS tests: a hermetic git identity and a repository with one commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def hermetic_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, email: str = "test@example.com") -> Path:
    """A global git config in tmp_path with a test identity, no system config, no real HOME, no RNS folder/user."""
    cfg = tmp_path / "gitconfig"
    cfg.write_text(f"[user]\n\tname = Test User\n\temail = {email}\n\tuseConfigOnly = true\n")
    monkeypatch.setenv("HOME", str(tmp_path / "fake-home"))
    monkeypatch.setenv("RH_IAC_HOME", str(tmp_path / "rh_iac_home"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL",
                "GIT_INDEX_FILE", "GIT_DIR", "GIT_WORK_TREE", "RH_IAC_RNS_FOLDER", "RH_IAC_USER"):
        monkeypatch.delenv(var, raising=False)
    from rh_iac.rns import addresses

    monkeypatch.setattr(addresses, "_folder", None)
    monkeypatch.setattr(addresses, "_git_user", None)
    return cfg


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("readme\n")
    (path / "stacks").mkdir()
    (path / "stacks" / "local.py").write_text("# stack\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path
