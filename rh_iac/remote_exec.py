"""The worker half of rh_iac's functions and modules: what a remote call runs inside, on a Dask worker.

Every remote call goes through :func:`run_call`, :func:`run_batch` or a :class:`ModuleHost` method. Around the user's
code they

- annotate an exception with its traceback as formatted on the worker (worker address, host, pid, function name,
  and for map items the item's index), as a note that travels with the pickled exception;
- forward what the call writes to ``sys.stdout`` / ``sys.stderr`` to the caller, when asked (``log_topic``): per call,
  not per process, so other tasks running in other threads of the same worker are not captured (see
  :class:`_StreamTee`);
- stop the call's Python code when it is cancelled (see :class:`_Interruptible`): a task whose future was cancelled
  (a timeout, ``Call.cancel()``, Ctrl-C in the caller) is interrupted at its next Python bytecode, so it stops
  occupying a worker thread. Code blocked inside one C call (a long ``time.sleep``, a socket read) stops when that
  call returns.

Workers import this module by reference (the pickled task names these functions). Dask is imported lazily.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any, Callable

from rh_iac.compute import REMOTE_NOTE_PREFIX, _short_repr
from rh_iac.errors import CallCancelledError

__all__ = ["run_call", "run_batch", "ModuleHost", "install_output_capture", "uninstall_output_capture"]


# --- remote tracebacks -----------------------------------------------------------------------------------------------
def _worker():
    from distributed import get_worker

    return get_worker()


def _where() -> str:
    import socket

    try:
        address = _worker().address
    except (ImportError, ValueError):
        address = "<not on a dask worker>"
    return f"worker {address} (host {socket.gethostname()}, pid {os.getpid()})"


def annotate(exc: BaseException, what: str, index: int | None = None, item: Any = None) -> None:
    """Attach the traceback, formatted here on the worker, to ``exc`` as a note (notes travel with the pickle).

    ``what`` names the call (``double()``, ``Counter.incr()``); ``index``/``item`` name a map item.
    """
    import traceback

    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next  # drop the wrapper's own frame: the traceback starts in the user's code
    te = traceback.TracebackException(type(exc), exc, tb)
    te.__notes__ = None  # existing notes are printed with the exception anyway: do not repeat them in this one
    formatted = "".join(te.format()).rstrip("\n")
    where = what if index is None else f"{what} on map item {index} ({_short_repr(item)})"
    try:
        exc.add_note(f"{REMOTE_NOTE_PREFIX}{where} on {_where()}:\n{formatted}")
    except (AttributeError, TypeError):  # an exception object that refuses attributes: keep it as it is
        pass


# --- forwarding a call's stdout/stderr -------------------------------------------------------------------------------
#: Text of one stream held back at most this long (characters) waiting for a newline, before it is sent anyway.
_MAX_PENDING = 8192


class _CallOutput:
    """Where one call's writes go: complete lines are sent to the caller's event topic as they are written."""

    def __init__(self, worker: Any, topic: str, what: str) -> None:
        self._worker, self._topic, self._what = worker, topic, what
        self._pending = {"stdout": "", "stderr": ""}
        self._lock = threading.Lock()  # threads the call starts with a copied context share this object

    def write(self, stream: str, text: str) -> None:
        with self._lock:
            buffered = self._pending[stream] + text
            cut = buffered.rfind("\n") + 1
            if cut == 0 and len(buffered) < _MAX_PENDING:
                self._pending[stream] = buffered
                return
            cut = cut or len(buffered)
            self._pending[stream] = buffered[cut:]
        self._send(stream, buffered[:cut])

    def flush(self, stream: str | None = None) -> None:
        for name in (stream,) if stream else ("stdout", "stderr"):
            with self._lock:
                text, self._pending[name] = self._pending[name], ""
            if text:
                self._send(name, text)

    def _send(self, stream: str, text: str) -> None:
        self._event({"stream": stream, "text": text, "call": self._what})

    def send_done(self, call_id: str) -> None:
        self._event({"done": call_id})

    def _event(self, msg: dict[str, str]) -> None:
        try:
            self._worker.log_event(self._topic, msg)
        except Exception:  # noqa: BLE001 - a closing worker must not turn a print into the call's failure
            pass


_current_output: ContextVar[_CallOutput | None] = ContextVar("rh_iac_call_output", default=None)


class _StreamTee:
    """Stands in for ``sys.stdout``/``sys.stderr`` while calls forward output: it writes everything to the real
    stream, and also to the current call's :class:`_CallOutput` (a context variable), if that call asked for it.

    One tee per stream is installed for as long as at least one forwarding call runs (a reference count), so calls
    in several worker threads never swap ``sys.stdout`` under each other, and the original object is put back when
    the last one ends.
    """

    def __init__(self, original: Any, stream: str) -> None:
        self._original, self._stream = original, stream

    def write(self, text: str) -> int:
        written = self._original.write(text) if self._original is not None else len(text)
        output = _current_output.get()
        if output is not None and text:
            output.write(self._stream, text)
        return written

    def flush(self) -> None:
        if self._original is not None:
            self._original.flush()
        output = _current_output.get()
        if output is not None:
            output.flush(self._stream)

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, buffer...: the real stream's
        return getattr(self._original, name)


_install_lock = threading.Lock()
_installed = 0
_saved_streams: tuple[Any, Any] | None = None
_tees: tuple[_StreamTee, _StreamTee] | None = None


def install_output_capture() -> None:
    """Put the tees in place of ``sys.stdout``/``sys.stderr`` (reference counted: pair with :func:`uninstall...`)."""
    global _installed, _saved_streams, _tees
    with _install_lock:
        if _installed == 0:
            _saved_streams = (sys.stdout, sys.stderr)
            _tees = (_StreamTee(sys.stdout, "stdout"), _StreamTee(sys.stderr, "stderr"))
            sys.stdout, sys.stderr = _tees
        _installed += 1


def uninstall_output_capture() -> None:
    """Undo one :func:`install_output_capture`; the last one restores the original stream objects.

    A stream that someone else replaced in the meantime is left as they set it.
    """
    global _installed, _saved_streams, _tees
    with _install_lock:
        if _installed == 0:
            return
        _installed -= 1
        if _installed == 0 and _saved_streams is not None and _tees is not None:
            if sys.stdout is _tees[0]:
                sys.stdout = _saved_streams[0]
            if sys.stderr is _tees[1]:
                sys.stderr = _saved_streams[1]
            _saved_streams = _tees = None


class _ForwardedOutput:
    """Context manager: the calling thread's writes to stdout/stderr also go to ``topic`` (nothing if None).

    With a ``call_id``, a last ``{"done": call_id}`` event follows the output, so a caller whose result travels
    another way than the output (an actor's reply comes straight back, not through the scheduler's ordered
    stream) can wait until it printed everything.
    """

    __slots__ = ("_output", "_token", "_call_id")

    def __init__(self, worker: Any, topic: str | None, what: str, call_id: str | None = None) -> None:
        self._output = _CallOutput(worker, topic, what) if topic else None
        self._token = None
        self._call_id = call_id

    def __enter__(self) -> None:
        if self._output is not None:
            install_output_capture()
            self._token = _current_output.set(self._output)

    def __exit__(self, *exc_info: Any) -> None:
        if self._output is not None:
            try:
                _current_output.reset(self._token)
                self._output.flush()  # before the call returns: the caller sees the lines before the result
                if self._call_id is not None:
                    self._output.send_done(self._call_id)
            finally:
                uninstall_output_capture()


# --- interrupting cancelled calls ------------------------------------------------------------------------------------
class CallInterrupted(BaseException):
    """Raised asynchronously in a worker thread whose call was cancelled (a BaseException: ``except Exception`` in
    the user's code does not swallow it). Converted to :class:`~rh_iac.compute.CallCancelledError` on the way out."""


_calls_lock = threading.Lock()
#: call id -> (thread ident, predicate polled by the watcher, or None when only an explicit interrupt() stops it)
_running: dict[str, tuple[int, Callable[[], bool] | None]] = {}
_watcher: threading.Thread | None = None
#: how often the watcher looks for cancelled tasks, and how long it lingers without any (so back-to-back tiny calls
#: do not start a thread each)
_POLL_S = 0.1
_LINGER_S = 30.0


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    # None clears a pending exception (ctypes passes None as NULL).
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


def interrupt(call_id: str) -> bool:
    """Raise :class:`CallInterrupted` in the thread running ``call_id``; False if that call is not running here."""
    with _calls_lock:
        entry = _running.pop(call_id, None)
        if entry is None:
            return False
        _set_async_exc(entry[0], CallInterrupted)  # under the lock: the call cannot be leaving its guard meanwhile
    return True


def _watch() -> None:
    global _watcher
    idle_since = time.monotonic()
    while True:
        time.sleep(_POLL_S)
        with _calls_lock:
            watched = [(cid, pred) for cid, (_, pred) in _running.items() if pred is not None]
            if not watched and time.monotonic() - idle_since > _LINGER_S:
                _watcher = None
                return
        if watched:
            idle_since = time.monotonic()
        for call_id, should_stop in watched:
            try:
                stop = should_stop()
            except Exception:  # noqa: BLE001 - a worker shutting down: leave the call alone
                stop = False
            if stop:
                interrupt(call_id)


class _Interruptible:
    """Context manager: while inside, :func:`interrupt` (or ``should_stop`` turning true) stops this thread's code.

    The invariant that makes the asynchronous exception safe: it is only ever set while the entry is registered,
    under the lock, and leaving the block unregisters and clears any pending one under the same lock. So it is
    raised inside this block (or while leaving it) and never in distributed's own code after the call returned.
    """

    __slots__ = ("_call_id", "_should_stop", "_thread")

    def __init__(self, call_id: str, should_stop: Callable[[], bool] | None = None) -> None:
        self._call_id, self._should_stop = call_id, should_stop
        self._thread = threading.get_ident()

    def __enter__(self) -> None:
        global _watcher
        with _calls_lock:
            _running[self._call_id] = (self._thread, self._should_stop)
            if self._should_stop is not None and _watcher is None:
                _watcher = threading.Thread(target=_watch, name="rh_iac-cancel-watcher", daemon=True)
                _watcher.start()

    def __exit__(self, *exc_info: Any) -> None:
        with _calls_lock:
            entry = _running.get(self._call_id)
            if entry is not None and entry[0] == self._thread:
                del _running[self._call_id]
            _set_async_exc(self._thread, None)


def _task_cancelled(worker: Any, key: Any) -> Callable[[], bool]:
    def cancelled() -> bool:
        ts = worker.state.tasks.get(key)
        return ts is not None and ts.state == "cancelled"

    return cancelled


def _current_task() -> tuple[Any, Any]:
    worker = _worker()
    return worker, worker.get_current_task()


# --- the entry points ------------------------------------------------------------------------------------------------
def _apply(fn: Callable, args: tuple, kwargs: dict, what: str) -> Any:
    try:
        return fn(*args, **kwargs)
    except CallInterrupted:
        raise
    except BaseException as exc:
        annotate(exc, what)
        raise


def _loads(payload: bytes, what: str) -> Any:
    import cloudpickle

    try:
        return cloudpickle.loads(payload)
    except BaseException as exc:
        annotate(exc, what)
        exc.add_note(
            f"{what} could not be unpickled on the worker: is its module importable there (same packages, "
            f"project code on the workers' path)?"
        )
        raise


def run_call(fn_payload: bytes, name: str, args: tuple, kwargs: dict, log_topic: str | None = None) -> Any:
    """Task body of one remote call: ``fn(*args, **kwargs)``, annotated, forwarded, interruptible."""
    worker, key = _current_task()
    what = f"{name}()"
    fn = _loads(fn_payload, what)
    with _ForwardedOutput(worker, log_topic, what):
        try:
            with _Interruptible(str(key), _task_cancelled(worker, key)):
                return _apply(fn, args, kwargs, what)
        except CallInterrupted:
            raise CallCancelledError(f"{what} was cancelled while running on {_where()}.") from None


def run_batch(
    start: int,
    items_payload: bytes,
    fn_payload: bytes,
    name: str,
    star: bool = False,
    log_topic: str | None = None,
) -> list:
    """Task body of one map chunk: ``fn`` applied to each item in order (``fn(*item)`` with ``star``).

    A failing item stops the chunk; its exception names the item's index in the whole map.
    """
    worker, key = _current_task()
    what = f"{name}()"
    fn = _loads(fn_payload, what)
    items = _loads(items_payload, what)
    out: list = []
    append = out.append
    with _ForwardedOutput(worker, log_topic, what):
        try:
            with _Interruptible(str(key), _task_cancelled(worker, key)):
                for offset, item in enumerate(items):
                    try:
                        append(fn(*item) if star else fn(item))
                    except CallInterrupted:
                        raise
                    except BaseException as exc:
                        annotate(exc, what, index=start + offset, item=item)
                        raise
        except CallInterrupted:
            raise CallCancelledError(f"{what} (map chunk from item {start}) was cancelled on {_where()}.") from None
    return out


class ModuleHost:
    """The Dask actor behind a :class:`~rh_iac.modules.RemoteModule`: it holds the one instance of the user's class.

    Method calls and attribute reads run in the worker's actor thread, one at a time, so the instance needs no
    locking. :meth:`cancel` is a coroutine: it runs on the worker's event loop, beside a running call.
    """

    def __init__(self, cls_payload: bytes, name: str, args: tuple, kwargs: dict, log_topic: str | None = None):
        self._name = name
        what = f"{name}()"
        cls = _loads(cls_payload, what)
        with _ForwardedOutput(_worker(), log_topic, what):
            self._instance = _apply(cls, args, kwargs, what)

    def call(self, call_id: str, method: str, args: tuple, kwargs: dict, log_topic: str | None = None) -> Any:
        what = f"{self._name}.{method}()"
        with _ForwardedOutput(_worker(), log_topic, what, call_id):
            try:
                with _Interruptible(call_id):
                    try:
                        bound = getattr(self._instance, method)
                    except AttributeError as exc:
                        annotate(exc, what)
                        raise
                    return _apply(bound, args, kwargs, what)
            except CallInterrupted:
                raise CallCancelledError(f"{what} was cancelled while running on {_where()}.") from None

    def read(self, attribute: str) -> Any:
        try:
            return getattr(self._instance, attribute)
        except BaseException as exc:
            annotate(exc, f"{self._name}.{attribute}")
            raise

    async def cancel(self, call_id: str) -> bool:
        return interrupt(call_id)

    def where(self) -> dict[str, Any]:
        """Where the instance lives: worker address and pid."""
        return {"worker": _worker().address, "pid": os.getpid()}
