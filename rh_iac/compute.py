"""Run Python on a deployed cluster: a TLS ``distributed.Client`` and remote functions.

::

    import rh_iac

    cluster = rh_iac.load("dev-cluster")
    client = rh_iac.connect(cluster)                 # cached: one client per scheduler address per process

    def add(x, y=1):
        return x + y

    remote_add = rh_iac.function(add).to(cluster)
    remote_add(2, y=3)                               # 5, computed on one of the cluster's workers
    remote_add.map(range(10_000))                    # [1, 2, ...], in order, batched into a few tasks

A remote exception is re-raised here as the same exception type, with a note holding the traceback as formatted on
the worker (worker address, host, pid and function name), so it shows in the local traceback.

Dask is imported lazily: importing this module costs nothing until something connects.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, TypeVar

from rh_iac.errors import ClusterUnreachableError, ComputeError, ResourceNotDeployedError

if TYPE_CHECKING:  # pragma: no cover
    import distributed

    from rh_iac.model import Cluster

__all__ = ["connect", "disconnect", "function", "Function", "RemoteFunction", "CHUNKS_PER_THREAD"]

T = TypeVar("T")

#: Function.map splits its items into about this many chunks per worker thread (one task per chunk): enough chunks
#: to balance uneven items over the workers, few enough that per-task overhead (~1.5 ms) stays negligible.
CHUNKS_PER_THREAD = 4

_clients: dict[tuple[int, str], "distributed.Client"] = {}
_clients_lock = threading.Lock()
_connect_locks: dict[tuple[int, str], threading.Lock] = {}


# --- connecting ----------------------------------------------------------------------------------------------------
def _cluster_address(cluster: "Cluster") -> tuple[str, dict[str, str]]:
    outputs = getattr(cluster, "outputs", None) or {}
    address, tls = outputs.get("scheduler_address"), outputs.get("tls")
    label = getattr(cluster, "label", repr(cluster))
    if not address or not tls:
        missing = " and ".join(k for k, v in (("scheduler_address", address), ("tls", tls)) if not v)
        raise ResourceNotDeployedError(
            f"{label} has no {missing} in its outputs: it is not deployed. Deploy its stack (`invoke deploy`) "
            f"or load the deployed cluster by name with rh_iac.load({getattr(cluster, 'name', '...')!r})."
        )
    return address, tls


def _security(cluster: "Cluster", tls: dict[str, str]):
    from rh_iac.tls import ClusterTLS

    label = getattr(cluster, "label", repr(cluster))
    try:
        cluster_tls = ClusterTLS.from_dict(tls)
    except (KeyError, TypeError) as exc:
        raise ComputeError(f"{label}: its TLS outputs are incomplete ({exc!r}); redeploy it with `invoke deploy`.") from exc
    for path in (cluster_tls.ca_file, cluster_tls.client_cert, cluster_tls.client_key):
        if not os.path.isfile(path):
            raise ComputeError(
                f"{label}: TLS file {path} is missing, so no client can authenticate to it; "
                f"redeploy the cluster with `invoke deploy` to re-issue its certificates."
            )
    return cluster_tls.security("client")


def connect(cluster: "Cluster", timeout: float = 10, **client_kwargs: Any) -> "distributed.Client":
    """A ``distributed.Client`` connected over mutual TLS to ``cluster``'s scheduler.

    Clients are cached per process and scheduler address: calling this again (or calling a remote function again)
    reuses the open client instead of reconnecting. A cached client that was closed or lost its scheduler is
    replaced. ``client_kwargs`` are passed to ``distributed.Client`` when a new client is made.

    Raises :class:`ResourceNotDeployedError` if the cluster has no scheduler address or TLS outputs, and
    :class:`ClusterUnreachableError` if its scheduler does not answer within ``timeout`` seconds.
    """
    address, tls = _cluster_address(cluster)
    cache_key = (os.getpid(), address)
    with _clients_lock:  # one lock per address: connecting to one cluster does not hold up another
        lock = _connect_locks.setdefault(cache_key, threading.Lock())
    with lock:
        client = _clients.get(cache_key)
        if client is not None:
            if client.status == "running":
                return client
            _clients.pop(cache_key, None)
            _close_quietly(client)

        security = _security(cluster, tls)
        from distributed import Client

        label = getattr(cluster, "label", repr(cluster))
        # Built in two steps so that a client whose connection failed can still be cleaned up: distributed closes
        # it, but leaves its event-loop thread running, one leaked thread per failed attempt.
        client = Client.__new__(Client)
        try:
            client.__init__(address, security=security, timeout=timeout, **client_kwargs)
        except (OSError, TimeoutError) as exc:  # refused, timed out, TLS handshake failed (ssl.SSLError is OSError)
            _stop_failed(client)
            raise ClusterUnreachableError(
                f"{label}: its scheduler at {address} does not answer within {timeout:g} s ({type(exc).__name__}: {exc}). "
                f"Check the cluster with `invoke status`, and start or re-create it with `invoke deploy`."
            ) from exc
        except BaseException:
            _stop_failed(client)
            raise
        _clients[cache_key] = client
        return client


def disconnect(cluster: "Cluster | None" = None) -> None:
    """Close the cached client of ``cluster`` (or every cached client of this process)."""
    address = None if cluster is None else (getattr(cluster, "outputs", None) or {}).get("scheduler_address")
    with _clients_lock:
        keys = [k for k in _clients if cluster is None or k[1] == address]
        clients = [_clients.pop(k) for k in keys]
    for client in clients:
        _close_quietly(client)


def _close_quietly(client) -> None:
    try:
        client.close(timeout=2)
    except Exception:  # noqa: BLE001 - closing a client whose scheduler is gone may fail; nothing to do then
        pass


def _stop_failed(client) -> None:
    try:
        client.close(timeout=2)
    except Exception:  # noqa: BLE001
        pass
    runner = getattr(client, "_loop_runner", None)
    try:
        if runner is not None and runner.is_started():
            runner.stop()
    except Exception:  # noqa: BLE001 - best effort: at worst one idle thread remains
        pass


# --- pickling ------------------------------------------------------------------------------------------------------
_pickler_cls = None


def _dumps(obj: Any) -> bytes:
    """cloudpickle ``obj``, keeping the source file names of functions pickled by value.

    cloudpickle renames the file of every code object it pickles by value (functions of ``__main__``, closures,
    lambdas) to ``<dynamic-code>``, so remote tracebacks lose their file and source lines. Keeping the real name
    lets the worker (which often shares the files) and this process (whose linecache has them) show the source.
    """
    import io

    global _pickler_cls
    if _pickler_cls is None:
        _pickler_cls = _make_pickler()
    buf = io.BytesIO()
    _pickler_cls(buf, protocol=5).dump(obj)
    return buf.getvalue()


def _make_pickler():
    import types
    from collections import ChainMap

    import cloudpickle

    base = getattr(cloudpickle.Pickler, "dispatch_table", {}).get(types.CodeType)
    if base is None:  # a cloudpickle without this hook: plain cloudpickle, file names become <dynamic-code>
        return cloudpickle.Pickler

    def reduce_code(code: types.CodeType):
        ctor, args = base(code)
        return ctor, tuple(
            code.co_filename if isinstance(a, str) and a == "<dynamic-code>" else a for a in args
        )

    class _Pickler(cloudpickle.Pickler):
        dispatch_table = ChainMap({types.CodeType: reduce_code}, cloudpickle.Pickler.dispatch_table)

    return _Pickler


# --- running on the worker -----------------------------------------------------------------------------------------
def _where() -> str:
    import socket

    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):
        address = "<not on a dask worker>"
    return f"worker {address} (host {socket.gethostname()}, pid {os.getpid()})"


def _annotate(exc: BaseException, name: str, index: int | None = None, item: Any = None) -> None:
    """Attach the traceback, formatted here on the worker, to ``exc`` as a note (notes travel with the pickle)."""
    import traceback

    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next  # drop the wrapper's own frame: the traceback starts in the user's function
    te = traceback.TracebackException(type(exc), exc, tb)
    te.__notes__ = None  # existing notes are printed with the exception anyway: do not repeat them in this one
    formatted = "".join(te.format()).rstrip("\n")
    what = f"{name}()" if index is None else f"{name}() on map item {index} ({_short_repr(item)})"
    exc.add_note(f"Remote traceback of {what} on {_where()}:\n{formatted}")


def _short_repr(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _run_call(fn_payload: bytes, name: str, args: tuple, kwargs: dict) -> Any:
    """Executed on a worker: call the function and annotate any exception with the remote traceback."""
    try:
        import cloudpickle

        fn = cloudpickle.loads(fn_payload)
        return fn(*args, **kwargs)
    except BaseException as exc:
        _annotate(exc, name)
        raise


def _run_batch(start: int, items_payload: bytes, fn_payload: bytes, name: str) -> list:
    """Executed on a worker: apply ``fn`` to one chunk of items, in order."""
    import cloudpickle

    try:
        fn = cloudpickle.loads(fn_payload)
        items = cloudpickle.loads(items_payload)
    except BaseException as exc:
        _annotate(exc, name)
        raise
    out = []
    append = out.append
    for offset, item in enumerate(items):
        try:
            append(fn(item))
        except BaseException as exc:
            _annotate(exc, name, index=start + offset, item=item)
            raise
    return out


# --- the public objects --------------------------------------------------------------------------------------------
def _name_of(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _key_prefix(name: str) -> str:
    # Task keys show in the dashboard; keep them readable and free of characters dask treats specially.
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name.replace("<locals>.", ""))
    return cleaned.strip("_") or "function"


class Function(Generic[T]):
    """A Python callable that can be sent to a cluster with :meth:`to`. Calling it directly runs it locally."""

    def __init__(self, fn: Callable[..., T], *, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"rh_iac.function expects a callable, got {fn!r} ({type(fn).__name__}).")
        self.fn = fn
        self.name = name or _name_of(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        return self.fn(*args, **kwargs)

    def to(self, cluster: "Cluster", **connect_kwargs: Any) -> "RemoteFunction[T]":
        """This function bound to ``cluster``; it connects on first use (the client is cached)."""
        return RemoteFunction(self.fn, cluster, name=self.name, connect_kwargs=connect_kwargs)

    def __repr__(self) -> str:
        return f"Function({self.name})"


class RemoteFunction(Generic[T]):
    """A function bound to a cluster: calling it runs it on one of the cluster's workers."""

    def __init__(
        self,
        fn: Callable[..., T],
        cluster: "Cluster",
        *,
        name: str | None = None,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.cluster = cluster
        self.name = name or _name_of(fn)
        self._connect_kwargs = dict(connect_kwargs or {})

    @property
    def client(self) -> "distributed.Client":
        return connect(self.cluster, **self._connect_kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> "distributed.Future":
        """Start a call on the cluster and return its ``distributed.Future`` (``.result()`` waits for it)."""
        client = self.client
        key = f"{_key_prefix(self.name)}-{uuid.uuid4().hex}"
        return client.submit(_run_call, _dumps(self.fn), self.name, args, kwargs, key=key, pure=False)

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker and return its value; a remote exception is re-raised here."""
        return self.submit(*args, **kwargs).result()

    def map(self, iterable: Iterable[Any], *, batch_size: int | None = None) -> list[T]:
        """``[fn(item) for item in iterable]``, computed on the cluster, in order.

        Items are sent in chunks, one task per chunk, run in a loop on a worker: each task costs milliseconds of
        scheduling, which would dominate tiny items (10,000 one-item tasks take ~20 s on two local workers). By default there are about :data:`CHUNKS_PER_THREAD` chunks per
        worker thread (at most one per item); ``batch_size`` sets the number of items per chunk instead
        (``batch_size=1`` is one task per item). Items travel pickled inside their chunk (futures among them are
        not resolved). If items fail, the first failing item in order re-raises, with a note naming its index.
        """
        items = list(iterable)
        if not items:
            return []
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
        client = self.client
        n = len(items)
        if batch_size is None:
            threads = sum(client.nthreads().values()) or 1
            chunks = min(n, CHUNKS_PER_THREAD * threads)
            batch_size = math.ceil(n / chunks)

        fn_payload = _dumps(self.fn)
        starts = list(range(0, n, batch_size))
        payloads = [_dumps(items[s : s + batch_size]) for s in starts]
        futures = client.map(
            _run_batch,
            starts,
            payloads,
            fn_payload=fn_payload,
            name=self.name,
            key=f"{_key_prefix(self.name)}-map",
            pure=False,
        )
        try:
            chunk_results = client.gather(futures)
        except Exception:
            # gather raises as soon as any chunk fails; report the first failing item in order instead, waiting
            # only for the chunks before it (each chunk stops at its own first failure).
            try:
                for future in futures:
                    future.result()
            finally:
                client.cancel(futures)
            raise
        except BaseException:  # KeyboardInterrupt: stop the work on the cluster too
            client.cancel(futures)
            raise
        out: list[T] = []
        for chunk in chunk_results:
            out.extend(chunk)
        return out

    def __repr__(self) -> str:
        return f"RemoteFunction({self.name} on {getattr(self.cluster, 'label', self.cluster)})"


def function(fn: Callable[..., T], *, name: str | None = None) -> Function[T]:
    """Wrap ``fn`` so that ``function(fn).to(cluster)`` runs it on the cluster's workers."""
    return Function(fn, name=name)
