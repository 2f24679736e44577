"""Run Python on a deployed cluster: a TLS ``distributed.Client`` and remote functions.

::

    import rh_iac

    cluster = rh_iac.load("dev-cluster")
    client = rh_iac.connect(cluster)                 # cached: one client per scheduler address per process

    def add(x, y=1):
        return x + y

    remote_add = rh_iac.function(add).to(cluster)
    remote_add(2, y=3)                               # 5, computed on one of the cluster's workers
    call = remote_add.remote(2)                      # a Call (future): call.result(), call.done(), call.cancel()
    remote_add.map(range(10_000))                    # [1, 2, ...], in order, batched into a few tasks
    remote_add.starmap([(1, 2), (3, 4)])             # [3, 7]

    careful = rh_iac.function(add).to(cluster, timeout=30, retries=2, stream_logs=True)
    careful.save("add")                              # an RNS record: code reference + cluster name
    rh_iac.load("add")(1)                            # in any process of the project

A remote exception is re-raised here as the same exception type, with a note holding the traceback as formatted on
the worker (worker address, host, pid and function name), so it shows in the local traceback.

Options (``.to(cluster, ...)`` or ``.options(...)``):

- ``timeout``: seconds a call (or a whole map) may take from its start. When it runs out the work is cancelled on
  the cluster (a running task is interrupted at its next Python bytecode) and :class:`CallTimeoutError` is raised.
- ``retries``: how many times distributed re-runs a task that raised. Independently of it, a task whose worker
  *died* is rescheduled by the scheduler on another worker, up to ``distributed.scheduler.allowed-failures``
  (default 3) deaths per task; beyond that :class:`WorkerDiedError` is raised.
- ``stream_logs``: what the call writes to ``sys.stdout``/``sys.stderr`` on the worker is written to this process's
  ``sys.stdout``/``sys.stderr`` line by line, while it runs (through the scheduler's event topics).

Dask is imported lazily: importing this module costs nothing until something connects.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import sys
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, TypeVar

from rh_iac.errors import (
    CallCancelledError,
    CallTimeoutError,
    ClusterUnreachableError,
    ComputeError,
    ResourceNotDeployedError,
    WorkerDiedError,
)
from rh_iac.versions import check_versions

if TYPE_CHECKING:  # pragma: no cover
    import distributed

    from rh_iac.model import Cluster
    from rh_iac.project import Project

__all__ = [
    "connect", "disconnect", "function", "Function", "RemoteFunction", "Call", "CallOptions",
    "CallTimeoutError", "CallCancelledError", "WorkerDiedError", "CHUNKS_PER_THREAD",
]

T = TypeVar("T")

#: Function.map splits its items into about this many chunks per worker thread (one task per chunk): enough chunks
#: to balance uneven items over the workers, few enough that per-task overhead (~1.5 ms) stays negligible.
CHUNKS_PER_THREAD = 4

#: Every note rh_iac attaches to an exception on a worker starts with this; it is how a remote exception (to re-raise
#: as it is) is told apart from one raised here by distributed (a timeout of a wait, a lost connection).
REMOTE_NOTE_PREFIX = "Remote traceback of "

_clients: dict[tuple[int, str], "distributed.Client"] = {}
_clients_lock = threading.Lock()
_connect_locks: dict[tuple[int, str], threading.Lock] = {}


def is_remote_exception(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by the user's code on a worker (it carries rh_iac's remote-traceback note)."""
    return any(isinstance(n, str) and n.startswith(REMOTE_NOTE_PREFIX) for n in getattr(exc, "__notes__", ()) or ())


def _worker_died_error(exc: BaseException, what: str) -> WorkerDiedError | None:
    """The :class:`WorkerDiedError` for distributed's ``KilledWorker``; None for any other exception."""
    if type(exc).__name__ != "KilledWorker":
        return None
    allowed = getattr(exc, "allowed_failures", None)
    last = getattr(getattr(exc, "last_worker", None), "address", "an unknown worker")
    deaths = f"{allowed + 1} workers" if isinstance(allowed, int) else "the workers"
    return WorkerDiedError(
        f"{what}: {deaths} died while running it (the last: {last}), so the scheduler stopped rescheduling it "
        f"(distributed.scheduler.allowed-failures={allowed}). The code probably crashes its process (memory, a "
        f"segfault, os._exit, a signal): check the worker logs, or give the workers more memory."
    )


# --- connecting ----------------------------------------------------------------------------------------------------
def _cluster_address(cluster: "Cluster") -> tuple[str, dict[str, str]]:
    outputs = getattr(cluster, "outputs", None) or {}
    address, tls = outputs.get("scheduler_address"), outputs.get("tls")
    label = getattr(cluster, "label", repr(cluster))
    if not address or not tls:
        missing = " and ".join(k for k, v in (("scheduler_address", address), ("tls", tls)) if not v)
        status = getattr(cluster, "status", None)
        if status is not None:  # loaded by name: its RNS record says what happened to it
            raise ResourceNotDeployedError(
                f"{label} is {status} (per its RNS record), so it has no {missing}; deploy its stack again "
                f"(`invoke deploy`)."
            )
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
            check_versions(client, label)  # a mismatch is named now, not met later as a deserialization error
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


# --- options -------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CallOptions:
    """How the calls of a :class:`RemoteFunction` run (see the module docstring for what each option does)."""

    timeout: float | None = None
    retries: int = 0
    stream_logs: bool = False

    def __post_init__(self) -> None:
        t = self.timeout
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < math.inf):
            raise ValueError(f"timeout must be a positive, finite number of seconds or None, got {t!r}.")
        r = self.retries
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ValueError(f"retries must be a non-negative integer, got {r!r}.")
        if not isinstance(self.stream_logs, bool):
            raise ValueError(f"stream_logs must be True or False, got {self.stream_logs!r}.")

    def replace(self, **changes: Any) -> "CallOptions":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; the options are timeout, retries, stream_logs.")
        return dataclasses.replace(self, **changes)

    def to_spec(self) -> dict[str, Any]:
        """The options as plain JSON values (what an RNS record holds)."""
        return dataclasses.asdict(self)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


# --- streaming remote output to this process -----------------------------------------------------------------------
_output_topics: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()
_output_done: dict[str, threading.Event] = {}
#: how long a finished call waits at most for the rest of its forwarded output (it normally arrives within ms)
OUTPUT_GRACE_S = 10.0


def _write_remote_output(event: tuple[float, Any]) -> None:
    """Event handler (runs on the client's event-loop thread): write one chunk of a remote call's output here."""
    _, msg = event
    if not isinstance(msg, dict):
        return
    if "done" in msg:  # the end of one call's output
        done = _output_done.pop(msg["done"], None)
        if done is not None:
            done.set()
        return
    stream = sys.stderr if msg.get("stream") == "stderr" else sys.stdout
    try:
        stream.write(str(msg.get("text", "")))
        stream.flush()
    except Exception:  # noqa: BLE001 - a closed stream here must not break the client's event loop
        pass


def output_topic(client: "distributed.Client") -> str:
    """The event topic on which workers send this client's calls' output; subscribed once per client.

    The topic is private to the client, so other processes connected to the same cluster never print it.
    """
    with _clients_lock:
        topic = _output_topics.get(client)
        if topic is None:
            topic = f"rh_iac-output-{client.id}"
            # The subscription travels on the same ordered stream as the tasks submitted after it.
            client.subscribe_topic(topic, _write_remote_output)
            _output_topics[client] = topic
    return topic


def await_output(call_id: str) -> Callable[[], None]:
    """For a call whose result does not travel on the scheduler's ordered stream (module methods): returns a
    function that waits until the call's ``done`` output event arrived, so its output is printed before its result."""
    done = threading.Event()
    _output_done[call_id] = done

    def settle() -> None:
        try:
            done.wait(OUTPUT_GRACE_S)
        finally:
            _output_done.pop(call_id, None)

    return settle


def discard_output_wait(call_id: str) -> None:
    """Forget an :func:`await_output` registration whose call never started."""
    _output_done.pop(call_id, None)


# --- a call in flight ----------------------------------------------------------------------------------------------
class Call(Generic[T]):
    """A remote call in flight, returned by ``.remote(...)``: a small future.

    :meth:`result` waits for the value and re-raises a remote exception as the same type, with its remote-traceback
    note. A call made with the ``timeout`` option must finish within that many seconds of its start: otherwise
    :meth:`result` cancels it on the cluster and raises :class:`CallTimeoutError`. ``result(timeout=...)`` only
    bounds that one wait: when it runs out, the call keeps running (as with ``concurrent.futures``).
    """

    __slots__ = ("what", "timeout", "future", "_deadline", "_cancel", "_translate", "_expired", "_cancel_requested",
                 "_settle")

    def __init__(
        self,
        future: Any,
        what: str,
        *,
        timeout: float | None = None,
        cancel: Callable[[], Any] | None = None,
        translate: Callable[[BaseException], BaseException | None] | None = None,
        settle: Callable[[], None] | None = None,
    ) -> None:
        #: what the call is, for messages: ``double()``, ``Counter.incr()``
        self.what = what
        self.timeout = timeout
        #: the underlying ``distributed.Future`` (or actor future, for module methods)
        self.future = future
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._cancel = cancel or future.cancel
        self._translate = translate
        self._expired: CallTimeoutError | None = None
        self._cancel_requested = False
        self._settle = settle  # run once the call ended in its own outcome (a value or the user's exception)

    def _settled(self) -> None:
        settle, self._settle = self._settle, None
        if settle is not None:
            settle()

    def done(self) -> bool:
        """Whether the call finished (with a value or an exception) or was cancelled."""
        return self._expired is not None or self.future.done()

    def cancelled(self) -> bool:
        """Whether :meth:`cancel` (or the timeout) cancelled the call."""
        return self._cancel_requested

    def cancel(self) -> bool:
        """Cancel the call on the cluster; running code is interrupted. False if it had already finished."""
        if self.done():
            return False
        self._cancel_requested = True
        self._cancel()
        return True

    def wait(self) -> T:
        """:meth:`result`, and if this process is interrupted (Ctrl-C) meanwhile, cancel the work on the cluster too."""
        try:
            return self.result()
        except KeyboardInterrupt:
            self.cancel()
            raise

    def result(self, timeout: float | None = None) -> T:
        """The call's value; raises the remote exception, :class:`CallTimeoutError` or :class:`CallCancelledError`."""
        if self._expired is not None:
            raise self._expired
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError(f"result(timeout=...) must be a non-negative number of seconds or None, got {timeout!r}.")
        wait, by_deadline = timeout, False
        if self._deadline is not None:
            remaining = _remaining(self._deadline)
            if timeout is None or remaining <= timeout:
                wait, by_deadline = remaining, True
        try:
            value = self.future.result(timeout=None if self.future.done() else wait)
        except TimeoutError as exc:
            if is_remote_exception(exc):
                self._settled()
                raise
            if by_deadline:
                self.cancel()
                self._expired = CallTimeoutError(
                    f"{self.what} did not finish within its timeout of {self.timeout:g} s; it was cancelled on the "
                    f"cluster. Raise the timeout (.options(timeout=...)) if it needs longer."
                )
                raise self._expired from None
            raise CallTimeoutError(
                f"{self.what} is still running after result(timeout={timeout:g}); it keeps running: call result() "
                f"again to wait longer, or cancel() it."
            ) from None
        except concurrent.futures.CancelledError as exc:
            if is_remote_exception(exc):
                self._settled()
                raise
            raise CallCancelledError(f"{self.what} was cancelled before it finished.") from None
        except Exception as exc:
            if is_remote_exception(exc):
                self._settled()
                raise
            if self._translate is None:
                raise
            translated = self._translate(exc)
            if translated is None:
                raise
            raise translated from exc
        self._settled()
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception the call raised (None if it returned a value).

        Like ``concurrent.futures``: raises :class:`CallTimeoutError` if ``timeout`` runs out while it still runs, and
        :class:`CallCancelledError` if it was cancelled. A call stopped by its own ``timeout`` option returns that
        :class:`CallTimeoutError`.
        """
        try:
            self.result(timeout)
        except CallCancelledError:
            raise
        except CallTimeoutError as exc:
            if exc is self._expired:
                return exc
            raise
        except Exception as exc:  # noqa: BLE001 - the call's outcome
            return exc
        return None

    def __repr__(self) -> str:
        state = "cancelled" if self._cancel_requested else "done" if self.done() else "running"
        return f"<Call {self.what} {state}>"


# --- the public objects --------------------------------------------------------------------------------------------
def _name_of(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _key_prefix(name: str) -> str:
    # Task keys show in the dashboard; keep them readable and free of characters dask treats specially.
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name.replace("<locals>.", ""))
    return cleaned.strip("_") or "function"


def _short_repr(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_UNSET: Any = object()


class Function(Generic[T]):
    """A Python callable that can be sent to a cluster with :meth:`to`. Calling it directly runs it locally."""

    def __init__(self, fn: Callable[..., T], *, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"rh_iac.function expects a callable, got {fn!r} ({type(fn).__name__}).")
        self.fn = fn
        self.name = name or _name_of(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        return self.fn(*args, **kwargs)

    def to(
        self,
        cluster: "Cluster",
        *,
        timeout: float | None = None,
        retries: int = 0,
        stream_logs: bool = False,
        **connect_kwargs: Any,
    ) -> "RemoteFunction[T]":
        """This function bound to ``cluster``; it connects on first use (the client is cached).

        ``timeout``, ``retries`` and ``stream_logs`` are the calls' options (see :class:`CallOptions`);
        ``connect_kwargs`` go to :func:`connect`.
        """
        options = CallOptions(timeout=timeout, retries=retries, stream_logs=stream_logs)
        return RemoteFunction(self.fn, cluster, name=self.name, connect_kwargs=connect_kwargs, options=options)

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
        options: CallOptions | None = None,
    ) -> None:
        self.fn = fn
        self.cluster = cluster
        self.name = name or _name_of(fn)
        #: the options every call of this function runs with
        self.call_options = options or CallOptions()
        self._connect_kwargs = dict(connect_kwargs or {})

    @property
    def client(self) -> "distributed.Client":
        """The cluster's client, with this project's code synced to the workers (checked once per bound function)."""
        from rh_iac.codesync import ensure_synced  # lazy: imports distributed

        return ensure_synced(self, connect(self.cluster, **self._connect_kwargs))

    def options(self, **changes: Any) -> "RemoteFunction[T]":
        """A copy with some options changed: ``remote.options(timeout=5, stream_logs=True)``."""
        return RemoteFunction(self.fn, self.cluster, name=self.name, connect_kwargs=self._connect_kwargs,
                              options=self.call_options.replace(**changes))

    # --- one call ---------------------------------------------------------------------------------------------------
    def submit(self, *args: Any, **kwargs: Any) -> "distributed.Future":
        """Start a call on the cluster and return its raw ``distributed.Future``; :meth:`remote` is the richer form."""
        from rh_iac.remote_exec import run_call

        client = self.client
        topic = output_topic(client) if self.call_options.stream_logs else None
        key = f"{_key_prefix(self.name)}-{uuid.uuid4().hex}"
        # args and kwargs travel as two arguments, so a user's keyword never collides with submit's own (key, ...)
        return client.submit(run_call, _dumps(self.fn), self.name, args, kwargs, topic, key=key, pure=False,
                             retries=self.call_options.retries or None)

    def remote(self, *args: Any, **kwargs: Any) -> Call[T]:
        """Start ``fn(*args, **kwargs)`` on a worker and return its :class:`Call` at once."""
        what = f"{self.name}()"
        return Call(self.submit(*args, **kwargs), what, timeout=self.call_options.timeout,
                    translate=lambda exc: _worker_died_error(exc, what))

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker and return its value; a remote exception is re-raised here."""
        return self.remote(*args, **kwargs).wait()

    # --- many calls -------------------------------------------------------------------------------------------------
    def map(
        self,
        iterable: Iterable[Any],
        *,
        batch_size: int | None = None,
        timeout: float | None = _UNSET,
        retries: int = _UNSET,
    ) -> list[T]:
        """``[fn(item) for item in iterable]``, computed on the cluster, in order.

        Items are sent in chunks, one task per chunk, run in a loop on a worker: each task costs milliseconds of
        scheduling, which would dominate tiny items (10,000 one-item tasks take ~20 s on two local workers). By
        default there are about :data:`CHUNKS_PER_THREAD` chunks per worker thread (at most one per item);
        ``batch_size`` sets the number of items per chunk instead (``batch_size=1`` is one task per item). Items
        travel pickled inside their chunk (futures among them are not resolved). If items fail, the first failing
        item in order re-raises, with a note naming its index.

        ``timeout`` (seconds for the whole map) and ``retries`` (per chunk) default to this function's options. A
        chunk whose worker dies is rescheduled, so a map survives workers dying under it.
        """
        return self._map(list(iterable), batch_size, False, timeout, retries)

    def starmap(
        self,
        iterable: Iterable[Iterable[Any]],
        *,
        batch_size: int | None = None,
        timeout: float | None = _UNSET,
        retries: int = _UNSET,
    ) -> list[T]:
        """``[fn(*args) for args in iterable]``, like :func:`itertools.starmap`, batched and ordered like :meth:`map`."""
        items = []
        for index, args in enumerate(iterable):
            try:
                items.append(tuple(args))
            except TypeError:
                raise TypeError(
                    f"{self.name}.starmap: item {index} ({_short_repr(args)}) is not an iterable of arguments; "
                    f"pass tuples such as [(1, 2), (3, 4)]."
                ) from None
        return self._map(items, batch_size, True, timeout, retries)

    def _map(self, items: list, batch_size: int | None, star: bool, timeout: Any, retries: Any) -> list[T]:
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
        changes = {k: v for k, v in (("timeout", timeout), ("retries", retries)) if v is not _UNSET}
        options = self.call_options.replace(**changes) if changes else self.call_options
        if not items:
            return []
        from rh_iac.remote_exec import run_batch

        client = self.client
        n = len(items)
        if batch_size is None:
            threads = sum(client.nthreads().values()) or 1
            batch_size = math.ceil(n / min(n, CHUNKS_PER_THREAD * threads))

        deadline = None if options.timeout is None else time.monotonic() + options.timeout
        fn_payload = _dumps(self.fn)
        starts = list(range(0, n, batch_size))
        payloads = [_dumps(items[s : s + batch_size]) for s in starts]
        futures = client.map(
            run_batch,
            starts,
            payloads,
            fn_payload=fn_payload,
            name=self.name,
            star=star,
            log_topic=output_topic(client) if options.stream_logs else None,
            key=f"{_key_prefix(self.name)}-map",
            pure=False,
            retries=options.retries or None,
        )
        try:
            chunks = self._collect(client, futures, starts, batch_size, n, deadline, options.timeout)
        except BaseException:  # a failure, a timeout or Ctrl-C: stop the rest of the work on the cluster too
            client.cancel(futures)
            raise
        out: list[T] = []
        for chunk in chunks:
            out.extend(chunk)
        return out

    def _collect(self, client, futures, starts, batch_size, n, deadline, timeout) -> list[list]:
        """Wait for every chunk (chunks of a dead worker are rescheduled by the scheduler meanwhile) and gather them.

        On failure, the first failing item in order decides what is raised: the chunks before the failing one are
        waited for (each chunk stops at its own first failure).
        """
        from distributed import as_completed

        what = f"{self.name}()"

        def timed_out() -> CallTimeoutError:
            unfinished = sum(not f.done() for f in futures)
            return CallTimeoutError(
                f"{what} map over {n} items did not finish within its timeout of {timeout:g} s; its {unfinished} "
                f"unfinished chunk(s) of {len(futures)} were cancelled on the cluster."
            )

        try:
            for future in as_completed(futures, loop=client.loop, timeout=_remaining(deadline)):
                if future.status != "finished":
                    break
            else:
                return client.gather(futures)
        except TimeoutError:
            raise timed_out() from None
        for future, start in zip(futures, starts):
            try:
                future.result(timeout=_remaining(deadline))
            except TimeoutError as exc:
                if is_remote_exception(exc):
                    raise
                raise timed_out() from None
            except concurrent.futures.CancelledError as exc:
                if is_remote_exception(exc):
                    raise
                raise CallCancelledError(f"{what} map: the chunk from item {start} was cancelled.") from None
            except Exception as exc:
                died = None if is_remote_exception(exc) else _worker_died_error(
                    exc, f"{what} on map items {start}-{min(start + batch_size, n) - 1}")
                if died is None:
                    raise
                raise died from exc
        return client.gather(futures)  # not reached: some chunk failed, and its error was raised above

    # --- naming -----------------------------------------------------------------------------------------------------
    def save(self, name: str, *, project: "Project | None" = None) -> dict[str, Any]:
        """Record this function in RNS under ``name`` and commit: a code reference (module and qualified name, not
        pickled code), the cluster's name and the options. ``rh_iac.load(name)`` then gives it back in any process
        of the project. Returns the record.

        Raises :class:`~rh_iac.coderef.CodeReferenceError` for functions that cannot be imported by name (lambdas,
        nested functions, functions of ``__main__``).
        """
        from rh_iac.coderef import save_code_record

        return save_code_record(name, "function", self.fn, self.cluster, self.call_options.to_spec(), project=project)

    def __repr__(self) -> str:
        return f"RemoteFunction({self.name} on {getattr(self.cluster, 'label', self.cluster)})"


def function(fn: Callable[..., T], *, name: str | None = None) -> Function[T]:
    """Wrap ``fn`` so that ``function(fn).to(cluster)`` runs it on the cluster's workers."""
    return Function(fn, name=name)
