"""The deploy's wait for a cloud cluster: block until its scheduler answers over TLS with its workers, or say why not.

After ``pulumi up`` the instances exist but are still booting. :func:`wait_ready` polls, strictly within its
timeout, the three things a usable cluster needs: the scheduler's port is open (from here: security group, firewall,
boot), it answers a mutual-TLS ``distributed.Client`` with at least ``workers`` workers, and its node agent wrote the
readiness marker to the status URL. It logs each change of state (and every 30 s), and on timeout raises
:class:`~rh_iac.errors.ClusterNotReadyError` with the state it was stuck in, what to do, the nodes' failure reports
and the tail of their bootstrap logs read from the status URL (fsspec: s3 through s3fs, gs through gcsfs).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

from rh_iac.errors import ClusterNotReadyError

LOG = logging.getLogger("rh_iac.readiness")
POLL_S = 2.0
PROGRESS_EVERY_S = 30.0
LOG_TAIL_LINES = 40
MAX_LOGS = 4


def _port_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class _Snapshot:
    """What the status prefix held at one reading."""

    marker: dict[str, Any] | None = None
    failures: tuple[dict[str, Any], ...] = ()
    log_tails: tuple[tuple[str, str], ...] = ()  # (file name, last lines), the scheduler's first
    error: str | None = None  # why the prefix could not be read (credentials, permissions, network)


class _StatusFolder:
    """The cluster's status prefix on its object store (readiness markers, failure reports, log tails), read by a
    background thread every poll, so a slow or unreachable store never stretches the wait past its timeout."""

    def __init__(self, status_url: str, storage_options: dict | None) -> None:
        import fsspec

        self.url = status_url
        try:
            self.fs, root = fsspec.core.url_to_fs(status_url, **(storage_options or {}))
        except ImportError as exc:
            raise ClusterNotReadyError(f"cannot read the cluster's status URL {status_url}: {exc}. Install the "
                                       f"extra for it: pip install 'rh_iac[s3]' (s3://) or 'rh_iac[gs]' (gs://).")
        self.root = root.rstrip("/")
        self.snapshot: _Snapshot | None = None  # None until the first reading finished
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="rh_iac-status-reader", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.snapshot = self._read()
            self._stop.wait(POLL_S)

    def _read(self) -> _Snapshot:
        try:
            self.fs.invalidate_cache()  # listings are cached by s3fs/gcsfs; the nodes write while we poll
            markers = self._json("scheduler-*.ready.json")
            logs = sorted(self._glob("*.log"), key=lambda p: (not p.rsplit("/", 1)[-1].startswith("scheduler-"), p))
            tails = []
            for path in logs[:MAX_LOGS]:
                text = self._cat(path)
                if text is not None:
                    lines = text.decode(errors="replace").rstrip().splitlines()
                    tails.append((path.rsplit("/", 1)[-1], "\n".join(lines[-LOG_TAIL_LINES:])))
            return _Snapshot(markers[-1] if markers else None, tuple(self._json("*.failed.json")), tuple(tails))
        except Exception as exc:  # noqa: BLE001 - credentials/permission/network errors differ per filesystem
            return _Snapshot(error=f"{type(exc).__name__}: {exc}")

    def _glob(self, pattern: str) -> list[str]:
        try:
            return sorted(self.fs.glob(f"{self.root}/{pattern}"))
        except FileNotFoundError:
            return []

    def _cat(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:  # removed since the listing
            return None

    def _json(self, pattern: str) -> list[dict[str, Any]]:
        out = []
        for path in self._glob(pattern):
            try:
                out.append(json.loads(self._cat(path) or b""))
            except ValueError:  # removed or half-written since the listing
                continue
        return sorted(out, key=lambda m: m.get("time", 0))


def _connect(address: str, security: Any, timeout: float):
    """A ``distributed.Client``, or the ``OSError``/``TimeoutError`` the attempt raised (TLS refused, timed out)."""
    from distributed import Client

    from rh_iac.compute import _stop_failed

    client = Client.__new__(Client)  # two steps, so a failed client's event-loop thread can be stopped
    try:
        client.__init__(address, security=security, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        _stop_failed(client)
        return exc
    return client


def _advice(state: str, port: int, status_url: str) -> str:
    if state.startswith("port"):
        return (f"Nothing accepted a connection on port {port}: the scheduler node may still be booting (wait "
                f"longer with a larger timeout), its bootstrap may have failed (see the log below), or the security "
                f"group / firewall does not admit this machine: check the cluster's allowed CIDRs.")
    if state.startswith("TLS"):
        return ("The port is open but the mutual-TLS handshake failed: the scheduler holds certificates of another "
                "CA than this client (re-issued stack TLS?). Redeploy with `invoke deploy`.")
    if state.startswith("marker unreadable"):
        return (f"The scheduler answers, but {status_url} cannot be read from here: check this machine's cloud "
                f"credentials (or the storage_options given) for the stack's bucket.")
    if state.startswith("marker"):
        return (f"The scheduler answers but its node wrote no readiness marker to {status_url}: the node's role may "
                f"lack write access to that prefix.")
    return ("The scheduler is up but workers are missing: see their bootstrap logs below (spot capacity, a failed "
            "install, workers not allowed to reach the scheduler inside the security group).")


def _failures(snapshot: _Snapshot | None, since: float | None) -> list[dict[str, Any]]:
    failures = snapshot.failures if snapshot is not None else ()
    return [f for f in failures if since is None or f.get("time", 0) >= since]


def _report(folder: _StatusFolder, since: float | None) -> str:
    snapshot = folder.snapshot
    if snapshot is None:
        return f"{folder.url} did not answer while waiting, so the nodes' reports cannot be shown."
    if snapshot.error:
        return (f"The nodes' reports in {folder.url} cannot be read from here ({snapshot.error}): check this "
                f"machine's cloud credentials (or the storage_options given) for the stack's bucket.")
    lines = [f"{f.get('role')} {f.get('node')} reported a failed boot: {f.get('error')}"
             for f in _failures(snapshot, since)]
    for name, tail in snapshot.log_tails:
        lines.append(f"--- tail of {folder.url.rstrip('/')}/{name} ---\n{tail}")
    if not snapshot.log_tails:
        lines.append(f"No node uploaded a bootstrap log to {folder.url}: the nodes may not have booted or reached the "
                     f"network; read the instance's console output (aws ec2 get-console-output / gcloud compute "
                     f"instances get-serial-port-output).")
    return "\n".join(lines)


def wait_ready(
    address: str,
    tls: dict[str, str],
    status_url: str,
    *,
    timeout: float = 900,
    workers: int = 0,
    storage_options: dict | None = None,
    label: str = "",
    since: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Block until the scheduler at ``address`` answers over TLS with ``workers`` workers and its readiness marker is
    in ``status_url``; return the marker (role, node, address, versions, time).

    ``tls`` is the cluster's :class:`~rh_iac.tls.ClusterTLS` as a dict (the client's certificate is used).
    ``since`` (a ``time.time()``, e.g. taken before the deploy) makes a failure report a node wrote after it end the
    wait at once. ``progress`` receives each progress line (they are also logged). Raises
    :class:`~rh_iac.errors.ClusterNotReadyError` after ``timeout`` seconds, or when a node reported a failed boot,
    saying which state it was stuck in and why, with the nodes' bootstrap log tails.
    """
    from rh_iac.tls import ClusterTLS

    name = label or "the cluster"
    deadline = time.monotonic() + timeout
    parsed = urllib.parse.urlparse(address)
    if parsed.scheme != "tls" or not parsed.hostname or not parsed.port:
        raise ClusterNotReadyError(f"{name}: scheduler address {address!r} is not tls://<host>:<port>; the stack "
                                   f"outputs are wrong, redeploy with `invoke deploy`.")
    host, port = parsed.hostname, parsed.port
    try:
        cluster_tls = ClusterTLS.from_dict(tls)
    except (KeyError, TypeError) as exc:
        raise ClusterNotReadyError(f"{name}: its TLS outputs are incomplete ({exc!r}); deploy again with "
                                   f"`invoke deploy` to re-issue them.") from exc
    for path in (cluster_tls.ca_file, cluster_tls.client_cert, cluster_tls.client_key):
        if not os.path.isfile(path):
            raise ClusterNotReadyError(f"{name}: TLS file {path} is missing, so no client can authenticate to it; "
                                       f"deploy again with `invoke deploy` to re-issue the certificates.")
    security = cluster_tls.security("client")
    folder = _StatusFolder(status_url, storage_options)

    def say(message: str) -> None:
        LOG.info("%s", message)
        if progress is not None:
            progress(message)

    client, state, said, said_at = None, "port unreachable", "", 0.0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if since is not None and _failures(folder.snapshot, since):
                raise ClusterNotReadyError(f"{name} is not ready: a node's bootstrap failed.\n{_report(folder, since)}"
                                           f"\nFix the cause, then `invoke deploy` again (or `invoke destroy`).")
            # a bare TCP probe (logged by the scheduler as a failed TLS handshake) only while no client is connected
            if client is None and not _port_open(host, port, max(0.1, min(POLL_S, remaining))):
                state = f"port unreachable: nothing accepts connections on {host}:{port}"
            else:
                if client is None and remaining > 0.5:
                    attempt = _connect(address, security, min(10.0, remaining))
                    if isinstance(attempt, BaseException):
                        state = f"TLS refused by {address} ({type(attempt).__name__}: {attempt})"
                    else:
                        client = attempt
                if client is not None:
                    try:
                        count = len(client.scheduler_info(n_workers=-1)["workers"])
                    except (OSError, TimeoutError) as exc:  # the scheduler went away: probe it from scratch
                        client.close(timeout=2)
                        client = None
                        state = f"port unreachable: the scheduler at {address} dropped the connection ({exc})"
                    else:
                        snapshot = folder.snapshot
                        marker = snapshot.marker if snapshot is not None else None
                        if count < workers:
                            state = f"{count} of {workers} workers have joined the scheduler at {address}"
                        elif snapshot is not None and snapshot.error:
                            state = f"marker unreadable: cannot list {status_url} ({snapshot.error})"
                        elif marker is None:
                            state = f"marker missing: no scheduler-*.ready.json in {status_url}"
                        else:
                            say(f"{name} is ready at {address} with {count} workers")
                            return marker
            now = time.monotonic()
            if state != said or now - said_at >= PROGRESS_EVERY_S:
                say(f"waiting for {name} ({max(0.0, deadline - now):.0f} s left): {state}")
                said, said_at = state, now
            if now >= deadline:
                raise ClusterNotReadyError(
                    f"{name} is not ready after {timeout:g} s at {address}: {state}.\n"
                    f"{_advice(state, port, status_url)}\n{_report(folder, since)}\n"
                    f"`invoke destroy` removes the cluster (it also powers itself off when idle)."
                )
            time.sleep(max(0.0, min(POLL_S, deadline - time.monotonic())))
    finally:
        folder.close()
        if client is not None:
            client.close(timeout=2)
