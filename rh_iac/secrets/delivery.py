"""Delivering secret values to a cluster's workers: environment variables, or files with mode 0600.

:func:`deliver` registers a ``distributed`` :class:`~distributed.diagnostics.plugin.WorkerPlugin` that carries the
values. The plugin is pickled by the client and travels over the cluster's mutual-TLS connection to the scheduler,
which keeps it in memory and hands it to every worker, including workers that join later (the scheduler replays its
worker plugins to each new worker). Nothing is written on the client side: no temporary file, no log record, no
command line. On each worker, the plugin's ``setup``

- sets ``os.environ[VAR]`` in the worker process (``as_env``), so the functions it runs see the values, and/or
- writes each value to a file with mode 0600 in a 0700 folder under the worker's ``local_directory``
  (``<local_directory>/rh_iac-secrets/<secret name>/<file>``; ``as_file``),

and its ``teardown`` (on :func:`revoke`, on re-delivery under the same name, on worker shutdown) removes them again.

The variables are set in-process, after the worker started: they are not in the worker's command line, nor in
``/proc/<pid>/environ``, which shows only the environment the process was *started* with (changes made to
``os.environ`` at runtime are invisible there). distributed logs only the plugin's name
(``Starting Worker plugin rh-iac-secret-<name>``), and the plugin's ``repr`` shows names, never values.

The plugin is registered under one name per secret (``rh-iac-secret-<name>``), so delivering a secret again replaces
the previous delivery (distributed tears down the old plugin first) rather than adding a second one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from rh_iac.errors import SecretDeliveryError

__all__ = ["PLUGIN_PREFIX", "ProviderSecret", "SecretDelivery", "SecretPlugin", "deliver", "plugin_name", "revoke",
           "secret_file"]

#: prefix of the worker plugin names; the secret's name follows
PLUGIN_PREFIX = "rh-iac-secret-"
#: the folder under each worker's local_directory that holds delivered secret files
FILES_FOLDER = "rh_iac-secrets"

_ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SECRET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")


def plugin_name(name: str) -> str:
    """The worker plugin name a secret is delivered under: ``rh-iac-secret-<name>``."""
    return PLUGIN_PREFIX + name


def _files_dir(local_directory: str | os.PathLike, name: str) -> Path:
    return Path(local_directory) / FILES_FOLDER / name


def secret_file(name: str, file: str | None = None, worker: Any = None) -> str:
    """On a worker: the path of secret ``name``'s delivered file (or its folder if ``file`` is None).

    ``file`` is the file name given as ``as_file`` (or ``<folder>/<key>`` for multi-value secrets). Each worker has
    its own ``local_directory``, so the path differs between workers; inside a task this finds the current worker's,
    in a ``client.run`` function pass its ``dask_worker`` as ``worker``.
    """
    if worker is None:
        from distributed import get_worker

        worker = get_worker()
    folder = _files_dir(worker.local_directory, name)
    return str(folder if file is None else folder / file)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_private(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` with mode 0600 from the start, atomically (temp file + replace, no symlinks)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class SecretPlugin(WorkerPlugin):
    """The worker plugin that carries one secret's values (see the module docstring); values stay in ``__dict__``.

    ``repr`` shows names only: distributed and tracebacks may show a plugin's repr.
    """

    idempotent = False  # a re-delivery under the same name replaces the old plugin

    def __init__(self, secret: str, values: dict[str, str], env: dict[str, str], files: dict[str, str]) -> None:
        self.secret = secret
        self.name = plugin_name(secret)
        self._values = values
        self._env = env  # key -> environment variable
        self._files = files  # key -> path relative to the secret's folder
        self._previous: dict[str, str | None] = {}
        self._folder: str | None = None

    def __repr__(self) -> str:  # names only: distributed and tracebacks may show a plugin's repr
        return (f"SecretPlugin({self.secret!r}, env={sorted(self._env.values())}, "
                f"files={sorted(self._files.values())})")

    __str__ = __repr__

    def setup(self, worker: Any) -> None:
        for key, var in self._env.items():
            if var not in self._previous:
                self._previous[var] = os.environ.get(var)
            # set in-process: visible to the worker's tasks, absent from /proc/<pid>/environ (the start environment)
            os.environ[var] = self._values[key]
        if self._files:
            folder = _files_dir(worker.local_directory, self.secret)
            _private_dir(folder.parent)
            _private_dir(folder)
            self._folder = str(folder)
            for key, rel in self._files.items():
                path = folder / rel
                if path.parent != folder:
                    _private_dir(path.parent)
                _write_private(path, self._values[key])

    def teardown(self, worker: Any) -> None:
        for var, old in self._previous.items():
            if old is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = old
        self._previous = {}
        if self._folder:
            folder = Path(self._folder)
            for rel in self._files.values():
                try:
                    (folder / rel).unlink()
                except FileNotFoundError:
                    pass
            for sub in sorted({(folder / rel).parent for rel in self._files.values()}, key=lambda p: -len(p.parts)):
                if sub != folder:
                    try:
                        sub.rmdir()
                    except OSError:
                        pass
            try:
                folder.rmdir()
            except OSError:
                pass
            self._folder = None


@dataclass(frozen=True)
class SecretDelivery:
    """What :func:`deliver` did: the plugin name, the variables set and, per worker address, the files written."""

    name: str
    plugin: str
    env: tuple[str, ...] = ()
    files: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def path(self) -> dict[str, str]:
        """For a single-file delivery: worker address -> the file's path on that worker."""
        return {addr: next(iter(paths.values())) for addr, paths in self.files.items() if len(paths) == 1}

    def __repr__(self) -> str:
        return f"SecretDelivery({self.name!r}, env={list(self.env)}, workers={len(self.files) or None})"


def _label(name: str) -> str:
    return f"Secret {name!r}"


def _env_map(name: str, keys: list[str], as_env: str | Mapping[str, str] | None) -> dict[str, str]:
    if as_env is None:
        return {}
    if isinstance(as_env, str):
        if len(keys) != 1:
            raise SecretDeliveryError(
                f"{_label(name)} holds {len(keys)} values ({', '.join(keys)}): as_env={as_env!r} names one variable; "
                f"pass a mapping of key -> variable name instead (e.g. {{{keys[0]!r}: {keys[0]!r}}})."
            )
        env = {keys[0]: as_env}
    elif isinstance(as_env, Mapping):
        unknown = sorted(str(k) for k in as_env if k not in keys)
        if unknown:
            raise SecretDeliveryError(f"{_label(name)}: as_env names keys {unknown} it does not hold (keys: {keys}).")
        env = dict(as_env)
    else:
        raise SecretDeliveryError(
            f"{_label(name)}: as_env must be a variable name or a mapping key -> variable name, "
            f"got {type(as_env).__name__}."
        )
    for var in env.values():
        if not isinstance(var, str) or not _ENV_VAR_RE.match(var):
            raise SecretDeliveryError(f"{_label(name)}: {var!r} is not a valid environment variable name.")
    if len(set(env.values())) != len(env):
        raise SecretDeliveryError(f"{_label(name)}: as_env maps two keys to the same variable.")
    return env


def _check_rel(name: str, rel: object) -> str:
    if (not isinstance(rel, str) or not rel or rel.startswith("/")
            or not all(_SEGMENT_RE.match(s) for s in rel.split("/"))):
        raise SecretDeliveryError(
            f"{_label(name)}: file name {rel!r} is invalid: use a plain relative name of letters, digits, '_', '-' "
            f"and '.' (no leading dot, no '..', at most one '/'-separated folder level), e.g. 'token'."
        )
    if len(rel.split("/")) > 2:
        raise SecretDeliveryError(f"{_label(name)}: file name {rel!r} nests too deep; use 'file' or 'folder/file'.")
    return rel


def _file_map(name: str, keys: list[str], as_file: str | Mapping[str, str] | None) -> dict[str, str]:
    if as_file is None:
        return {}
    if isinstance(as_file, str):
        if len(keys) == 1:
            files = {keys[0]: as_file}
        else:  # a folder with one file per key
            files = {k: f"{as_file}/{k}" for k in keys}
    elif isinstance(as_file, Mapping):
        unknown = sorted(str(k) for k in as_file if k not in keys)
        if unknown:
            raise SecretDeliveryError(f"{_label(name)}: as_file names keys {unknown} it does not hold (keys: {keys}).")
        files = dict(as_file)
    else:
        raise SecretDeliveryError(
            f"{_label(name)}: as_file must be a file name or a mapping key -> file name, got {type(as_file).__name__}."
        )
    for rel in files.values():
        _check_rel(name, rel)
    if len(set(files.values())) != len(files):
        raise SecretDeliveryError(f"{_label(name)}: as_file maps two keys to the same file.")
    return files


def _client(cluster: Any) -> Any:
    from distributed import Client

    if isinstance(cluster, Client):
        return cluster
    from rh_iac.compute import connect

    return connect(cluster)


def deliver(
    secret_values: Mapping[str, str],
    cluster: Any,
    *,
    as_env: str | Mapping[str, str] | None = None,
    as_file: str | Mapping[str, str] | None = None,
    name: str,
) -> SecretDelivery:
    """Deliver ``secret_values`` (key -> value) to every worker of ``cluster`` (a Cluster or a connected Client).

    Args:
        as_env: a variable name (for a single value), or a mapping key -> variable name; set in each worker process.
        as_file: a file name (a single value; a folder of one file per key for several), or a mapping key -> file
            name; written with mode 0600 in ``<local_directory>/rh_iac-secrets/<name>/`` (0700) on each worker.
        name: the secret's name; the plugin is registered as ``rh-iac-secret-<name>``, so a second delivery of the
            same name replaces the first (its variables are restored and its files removed before the new setup).

    Returns a :class:`SecretDelivery` naming the variables and, per worker, the file paths there (a worker that
    joins later gets the same delivery; :func:`secret_file` finds the path from inside a task).

    Raises :class:`SecretDeliveryError` for bad arguments or a worker that could not apply the delivery; no message
    contains a value.
    """
    if not isinstance(name, str) or not _SECRET_NAME_RE.match(name):
        raise SecretDeliveryError(f"secret name {name!r} is invalid: use lowercase letters, digits and hyphens.")
    if not isinstance(secret_values, Mapping) or not secret_values:
        raise SecretDeliveryError(f"{_label(name)}: there are no values to deliver.")
    bad = sorted(str(k) for k, v in secret_values.items() if not isinstance(k, str) or not k or not isinstance(v, str))
    if bad:
        raise SecretDeliveryError(f"{_label(name)}: keys {bad} need non-empty str names and str values.")
    if as_env is None and as_file is None:
        raise SecretDeliveryError(f"{_label(name)}: say how to deliver it: as_env=..., as_file=..., or both.")
    keys = list(secret_values)
    env = _env_map(name, keys, as_env)
    files = _file_map(name, keys, as_file)
    plugin = SecretPlugin(name, dict(secret_values), env, files)
    client = _client(cluster)
    try:
        client.register_plugin(plugin, name=plugin.name)
    except Exception as exc:  # the worker's exception; its message is not repeated (it could quote a value)
        try:  # the scheduler kept the plugin: take it back, so no worker is left half-delivered or replays it
            client.unregister_worker_plugin(plugin.name)
        except Exception:
            pass
        raise SecretDeliveryError(
            f"{_label(name)}: a worker could not apply the delivery ({type(exc).__name__}); check the worker's "
            f"local_directory is writable and the worker logs."
        ) from None
    paths: dict[str, dict[str, str]] = {}
    if files:
        local_dirs = client.run(_local_directory)
        paths = {addr: {k: str(_files_dir(d, name) / rel) for k, rel in files.items()}
                 for addr, d in local_dirs.items()}
    return SecretDelivery(name=name, plugin=plugin.name, env=tuple(env.values()), files=paths)


def _local_directory(dask_worker: Any) -> str:
    return str(dask_worker.local_directory)


def revoke(name: str, cluster: Any) -> bool:
    """Remove secret ``name``'s delivery from every worker (variables restored, files removed); whether it was there."""
    client = _client(cluster)
    plugin = plugin_name(name)
    registered = client.run_on_scheduler(_has_worker_plugin, plugin)
    if not registered:
        return False
    client.unregister_worker_plugin(plugin)
    return True


def _has_worker_plugin(plugin: str, dask_scheduler: Any = None) -> bool:
    return plugin in dask_scheduler.worker_plugins


class ProviderSecret:
    """Credentials discovered from a provider's standard files or environment variables (aws, gcp, huggingface,
    github, ssh, custom): a transient object, never recorded in RNS, held only in this process's memory.

    Keys are those of :func:`rh_iac.secrets.discover` (the variable names the provider's SDKs read), so ``.to(cluster)``
    sets them under those names by default.
    """

    def __init__(self, provider: str, values: Mapping[str, str], *, name: str | None = None) -> None:
        self.provider = provider
        self.name = name or provider
        if not _SECRET_NAME_RE.match(self.name):
            raise SecretDeliveryError(f"secret name {self.name!r} is invalid: use lowercase letters, digits, hyphens.")
        self._values = dict(values)

    @property
    def keys(self) -> list[str]:
        """The names of the values (no values)."""
        return list(self._values)

    def values(self) -> dict[str, str]:
        """The discovered values (a copy)."""
        return dict(self._values)

    def __repr__(self) -> str:
        return f"ProviderSecret({self.provider!r}, name={self.name!r}, keys={self.keys})"

    __str__ = __repr__

    def __reduce__(self):  # never pickled by accident (e.g. captured in a task's closure)
        raise TypeError(f"{self!r} is not picklable: deliver it with .to(cluster) instead of sending it in a task.")

    def to(
        self,
        cluster: Any,
        *,
        as_env: str | Mapping[str, str] | None = None,
        as_file: str | Mapping[str, str] | None = None,
    ) -> SecretDelivery:
        """Deliver the values to every worker; by default as environment variables named like the keys."""
        if as_env is None and as_file is None:
            as_env = {k: k for k in self._values}
        return deliver(self._values, cluster, as_env=as_env, as_file=as_file, name=self.name)

    def revoke(self, cluster: Any) -> bool:
        """Remove the delivery from the workers."""
        return revoke(self.name, cluster)
