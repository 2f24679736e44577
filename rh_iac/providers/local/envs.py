"""Per-Env virtualenvs for the local provider: the interpreter a cluster's workers run in.

An Env's venv lives in ``<state_dir>/envs/<name>-<digest>/``; the digest covers what the venv is made of (the Env's
packages and setup commands, the base interpreter, rh_iac's version), so a changed Env gets a new venv while the old
one stays valid until the cluster has switched over, and an unchanged Env is built once and reused.

A venv is built in a hidden directory beside its final place and renamed into place only when every step succeeded:
a directory named ``<name>-<digest>`` is always complete, and a failed build leaves nothing behind. Builders of the
same digest are serialized by a lock file (``flock``: released by the kernel if the builder dies).

The venv sees the deploying environment's packages (dask, distributed, rh_iac itself), so client and workers run
identical versions, through a ``.pth`` file that appends the base site-packages directories to ``sys.path``; the
venv's own site-packages come first, so a package installed into the Env takes precedence over the base one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import rh_iac
from rh_iac.errors import DeployError

ENVS_DIR = "envs"
BASE_SITE_PTH = "zz-rh-iac-base-site.pth"  #: sorts after the venv's own .pth files, so their paths come first
PIP_FLAGS = ("--disable-pip-version-check", "--no-input")
TAIL_LINES = 25  #: lines of a failed command's output quoted in the error
_BUILD_SUFFIX, _TRASH_SUFFIX = ".build", ".trash"


# --- where an Env's venv lives -----------------------------------------------------------------------------------
def base_site_dirs() -> list[str]:
    """The site-packages directories of the interpreter running this code, the venv's fallback for imports."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.insert(0, site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def env_digest(packages: Sequence[str], setup: Sequence[str]) -> str:
    """12 hex digits identifying a venv: the Env's packages and setup, the base interpreter and rh_iac versions.

    The base site directories are included too: the venv's ``.pth`` file points at them.
    """
    payload = json.dumps({"packages": list(packages), "setup": list(setup), "python": sys.version,
                          "rh_iac": rh_iac.__version__, "base_site": base_site_dirs()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def env_dir(state_dir: Path, name: str, packages: Sequence[str], setup: Sequence[str]) -> Path:
    """``<state_dir>/envs/<name>-<digest>``: where the venv of this Env content lives."""
    return Path(state_dir).resolve() / ENVS_DIR / f"{name}-{env_digest(packages, setup)}"


def venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


# --- building ----------------------------------------------------------------------------------------------------
def ensure_env(state_dir: Path, name: str, packages: list[str], setup: list[str], timeout: float = 600, *,
               env: Mapping[str, str] | None = None) -> Path:
    """The python executable of Env ``name``'s virtualenv, built now unless an identical one exists.

    ``env`` is the environment pip and the setup commands run with (default: this process's), e.g. the deploying
    environment without the variables that carry secrets. Raises :class:`DeployError` naming the Env, with the tail
    of pip's or the setup command's output, if a step fails or the whole build takes longer than ``timeout`` s.
    """
    venv = env_dir(state_dir, name, packages, setup)
    if venv_python(venv).exists():  # only complete venvs are ever renamed into place
        return venv_python(venv)
    deadline = time.monotonic() + timeout
    venv.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _build_lock(venv, name, deadline):
        if venv_python(venv).exists():  # another builder finished while we waited
            return venv_python(venv)
        _remove_leftovers(venv)  # we hold the lock: any build directory of this digest is a dead builder's
        tmp = Path(tempfile.mkdtemp(prefix=f".{venv.name}.", suffix=_BUILD_SUFFIX, dir=venv.parent))
        try:
            _build(tmp, venv, name, packages, setup, deadline, dict(os.environ if env is None else env))
            _relocate(tmp, venv)
            os.rename(tmp, venv)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return venv_python(venv)


def _build(tmp: Path, final: Path, name: str, packages: list[str], setup: list[str], deadline: float,
           env: dict[str, str]) -> None:
    """Create a venv (with pip) in ``tmp`` that sees the base packages, install ``packages``, run ``setup``."""
    label = f"Env {name!r}"
    _run([sys.executable, "-m", "venv", str(tmp)], f"{label}: creating its virtualenv", tmp.parent, env, deadline)
    _write_base_pth(tmp)
    python = str(venv_python(tmp))
    if packages:
        _run([python, "-m", "pip", "install", *PIP_FLAGS, *packages],
             f"{label}: pip could not install {', '.join(packages)}", tmp, env, deadline)
    path = f"{tmp / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
    setup_env = {**env, "PATH": path, "VIRTUAL_ENV": str(tmp), "RH_IAC_ENV_DIR": str(final)}
    setup_env.pop("PYTHONHOME", None)
    for command in setup:
        _run(command, f"{label}: setup command {command!r} failed", tmp, setup_env, deadline, shell=True)


def _site_packages(venv: Path) -> Path:
    scheme = "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix"
    return Path(sysconfig.get_path("purelib", scheme, vars={"base": str(venv), "platbase": str(venv)}))


def _write_base_pth(venv: Path) -> None:
    """Append the base site-packages (and whatever their own .pth files add, e.g. editable installs) to sys.path."""
    lines = [f"import site; site.addsitedir({d!r})\n" for d in base_site_dirs()]
    (_site_packages(venv) / BASE_SITE_PTH).write_text("".join(lines))


def _relocate(tmp: Path, final: Path) -> None:
    """Point the scripts in ``bin/`` (pip's shebangs, activate) at the venv's final place before it moves there."""
    old, new = str(tmp).encode(), str(final).encode()
    for path in [*(tmp / "bin").iterdir(), tmp / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 20:
            continue
        data = path.read_bytes()
        if old in data:
            path.write_bytes(data.replace(old, new))


def _run(argv: list[str] | str, what: str, cwd: Path, env: Mapping[str, str], deadline: float, *,
         shell: bool = False) -> None:
    """Run one build step with its output captured; a non-zero exit or the deadline raises :class:`DeployError`."""
    proc = subprocess.Popen(argv, cwd=cwd, env=dict(env), shell=shell, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 0.01))
    except BaseException as exc:  # timed out or interrupted: stop the step and everything it started
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            output, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired as late:  # a daemon that left the group still holds the output open
            output = late.output
            proc.stdout.close()
            proc.wait()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        raise DeployError(f"{what}: timed out (the Env's build exceeded its time limit);\n{_tail(output)}") from None
    if proc.returncode != 0:
        raise DeployError(f"{what} (exit code {proc.returncode}):\n{_tail(output)}")


def _tail(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    return "\n".join((output or "(no output)").rstrip().splitlines()[-TAIL_LINES:])


# --- locking and clean-up ----------------------------------------------------------------------------------------
def _lock_path(venv: Path) -> Path:
    return venv.parent / f".{venv.name}.lock"


@contextmanager
def _build_lock(venv: Path, name: str, deadline: float) -> Iterator[None]:
    """Hold the lock of ``venv``'s digest, waiting until ``deadline`` for another builder to finish."""
    fd = os.open(_lock_path(venv), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DeployError(f"Env {name!r}: another process is still building {venv}; "
                                      f"wait for it to finish, then deploy again.") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _try_lock(venv: Path) -> Iterator[bool]:
    """The lock of ``venv``'s digest if it is free right now (True), else False: someone is building it."""
    fd = os.open(_lock_path(venv), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _remove_leftovers(venv: Path) -> None:
    """Remove build and trash directories of ``venv``'s digest (their builders are gone: the caller holds the lock)."""
    for path in venv.parent.glob(f".{venv.name}.*"):
        if path.is_dir() and path.name.endswith((_BUILD_SUFFIX, _TRASH_SUFFIX)):
            shutil.rmtree(path, ignore_errors=True)


def _in_use(venv: Path) -> bool:
    """True if a live process runs this venv's interpreter (its argv[0] is inside ``venv``)."""
    prefix = str(venv).encode() + b"/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0]
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if argv0.startswith(prefix) and state not in ("Z", "X", "x"):
            return True
    return False


def prune_envs(state_dir: Path, name: str, keep: Path | None) -> list[Path]:
    """Delete Env ``name``'s venvs other than ``keep`` that no live process runs; returns the deleted ones.

    A venv is first renamed out of its place (atomically), then removed, so an interrupted prune never leaves an
    incomplete venv under a valid name. A venv that is being built or used right now is left alone.
    """
    envs = Path(state_dir).resolve() / ENVS_DIR
    pattern = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{12}}$")
    keep = Path(keep).resolve() if keep is not None else None
    removed: list[Path] = []
    for venv in sorted(envs.iterdir()) if envs.is_dir() else []:
        if not pattern.match(venv.name) or not venv.is_dir() or venv == keep or _in_use(venv):
            continue
        with _try_lock(venv) as locked:
            if not locked:
                continue
            _remove_leftovers(venv)
            trash = Path(tempfile.mkdtemp(prefix=f".{venv.name}.", suffix=_TRASH_SUFFIX, dir=envs))
            os.rename(venv, trash / venv.name)
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(venv)
    return removed
