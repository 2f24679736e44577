"""Modules: a stateful remote object, instantiated once on a worker; its method calls go to that one instance.

::

    import rh_iac

    class Counter:
        def __init__(self, start=0):
            self.count = start

        def incr(self, by=1):
            self.count += by
            return self.count

    counter = rh_iac.module(Counter).to(cluster, start=10)   # Counter(start=10), created on one worker
    counter.incr()                                           # 11, run there, on that instance
    counter.incr.remote(5).result()                          # 16: a Call (future), like functions'
    counter.count                                            # 16: attributes are read from the instance
    counter.close()                                          # the worker drops the instance

Built on Dask actors: the instance lives inside a :class:`~rh_iac.remote_exec.ModuleHost` actor, so calls run one
at a time in the worker's actor thread, exceptions come back with the worker's traceback as a note (as for
functions), ``stream_logs`` forwards the methods' output, and a method call that times out or is cancelled is
interrupted. The instance's state lives in one worker process: if that process dies, the state is gone and every
further call raises :class:`ModuleLostError` (create a new instance with ``.to()``).

Names on the proxy: ``close`` and ``method`` are the proxy's own; a remote method with one of those names is reached
with ``proxy.method("close")``. Dunder names are never forwarded.

Dask is imported lazily: importing this module costs nothing until something connects.
"""

from __future__ import annotations

import inspect
import uuid
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rh_iac.compute import (
    Call,
    CallOptions,
    _dumps,
    _key_prefix,
    _worker_died_error,
    await_output,
    connect,
    discard_output_wait,
    is_remote_exception,
    output_topic,
)
from rh_iac.errors import ModuleClosedError, ModuleLostError

if TYPE_CHECKING:  # pragma: no cover
    from rh_iac.model import Cluster
    from rh_iac.project import Project

__all__ = ["module", "ModuleSpec", "RemoteModule", "RemoteMethod", "ModuleLostError", "ModuleClosedError"]

T = TypeVar("T")
_MISSING = object()


def _is_method(static: Any) -> bool:
    """Whether a class attribute (as ``inspect.getattr_static`` finds it) is called rather than read."""
    if static is _MISSING or isinstance(static, (property, type)):
        return False
    return isinstance(static, (staticmethod, classmethod)) or callable(static)


class ModuleSpec(Generic[T]):
    """A class that can be instantiated on a cluster (:meth:`to`), optionally bound to one cluster already.

    Calling a spec creates an instance: on its bound cluster if it has one (``rh_iac.load("counter")(start=1)``),
    else locally, like calling the class (as a :class:`~rh_iac.compute.Function` runs locally when called).
    """

    def __init__(
        self,
        cls: type[T],
        *,
        name: str | None = None,
        cluster: "Cluster | None" = None,
        options: CallOptions | None = None,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(cls, type):
            raise TypeError(f"rh_iac.module expects a class, got {cls!r} ({type(cls).__name__}).")
        self.cls = cls
        self.name = name or cls.__qualname__
        self.cluster = cluster
        options = options or CallOptions()
        if options.retries:
            raise ValueError(
                f"module {self.name}: retries is not supported for modules (a method call changes the instance's "
                f"state, so re-running it is not safe); retry in the caller where that is safe."
            )
        #: the options every method call runs with (timeout, stream_logs)
        self.call_options = options
        self._connect_kwargs = dict(connect_kwargs or {})

    def _copy(self, **changes: Any) -> "ModuleSpec[T]":
        fields = {"name": self.name, "cluster": self.cluster, "options": self.call_options,
                  "connect_kwargs": self._connect_kwargs, **changes}
        return ModuleSpec(self.cls, **fields)

    def options(self, **changes: Any) -> "ModuleSpec[T]":
        """A copy with options changed: ``timeout`` (seconds per method call) and ``stream_logs``."""
        return self._copy(options=self.call_options.replace(**changes))

    def bind(self, cluster: "Cluster", **connect_kwargs: Any) -> "ModuleSpec[T]":
        """A copy bound to ``cluster``: calling it creates the instance there; :meth:`save` records that cluster."""
        return self._copy(cluster=cluster, connect_kwargs=connect_kwargs or self._connect_kwargs)

    def to(self, cluster: "Cluster", *init_args: Any, **init_kwargs: Any) -> "RemoteModule[T]":
        """Create ``cls(*init_args, **init_kwargs)`` on one of ``cluster``'s workers and return its proxy.

        An exception of ``__init__`` is re-raised here with its remote traceback, as for functions.
        """
        from rh_iac.remote_exec import ModuleHost

        from rh_iac.codesync import ensure_synced

        client = ensure_synced(self, connect(cluster, **self._connect_kwargs))
        topic = output_topic(client) if self.call_options.stream_logs else None
        key = f"{_key_prefix(self.name)}-{uuid.uuid4().hex}"
        future = client.submit(ModuleHost, _dumps(self.cls), self.name, init_args, init_kwargs, topic,
                               actor=True, key=key, pure=False)
        what = f"{self.name}()"
        try:
            actor = Call(future, what, timeout=self.call_options.timeout,
                         translate=lambda exc: _worker_died_error(exc, what)).result()
        except BaseException:
            future.release()
            raise
        return RemoteModule(self, cluster, client, future, actor, topic)

    def __call__(self, *init_args: Any, **init_kwargs: Any) -> "RemoteModule[T] | T":
        """An instance: remote on the bound cluster (a :class:`RemoteModule`), else a plain local one."""
        if self.cluster is None:
            return self.cls(*init_args, **init_kwargs)
        return self.to(self.cluster, *init_args, **init_kwargs)

    def save(self, name: str, *, cluster: "Cluster | None" = None, project: "Project | None" = None) -> dict[str, Any]:
        """Record this class in RNS under ``name`` (code reference, cluster name, options) and commit.

        ``rh_iac.load(name)`` then returns this spec bound to the cluster, in any process of the project. The
        cluster is ``cluster`` or the bound one. Returns the record.
        """
        from rh_iac.coderef import save_code_record

        target = cluster if cluster is not None else self.cluster
        if target is None:
            raise ValueError(f"module {self.name}: save it bound to a cluster: spec.save({name!r}, cluster=...) or "
                             f"spec.bind(cluster).save({name!r}).")
        spec = {"timeout": self.call_options.timeout, "stream_logs": self.call_options.stream_logs}
        return save_code_record(name, "module", self.cls, target, spec, project=project)

    def __repr__(self) -> str:
        where = f" on {getattr(self.cluster, 'label', self.cluster)}" if self.cluster is not None else ""
        return f"ModuleSpec({self.name}{where})"


class RemoteMethod:
    """One method of a remote instance: call it for the value, or :meth:`remote` for a :class:`Call`."""

    __slots__ = ("_module", "name")

    def __init__(self, module: "RemoteModule", name: str) -> None:
        self._module, self.name = module, name

    def remote(self, *args: Any, **kwargs: Any) -> Call:
        """Start the method call and return its :class:`~rh_iac.compute.Call` at once."""
        return self._module._start(self.name, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.remote(*args, **kwargs).wait()

    def __repr__(self) -> str:
        return f"<RemoteMethod {self._module._spec.name}.{self.name}>"


class RemoteModule(Generic[T]):
    """Proxy of one instance living on a worker: ``proxy.method(...)`` runs there; ``proxy.attr`` reads it there."""

    _OWN = frozenset({"_spec", "_cluster", "_client", "_future", "_actor", "_topic", "_closed", "_lost"})

    def __init__(self, spec: ModuleSpec[T], cluster: "Cluster", client: Any, future: Any, actor: Any,
                 topic: str | None) -> None:
        # The Actor binds itself to distributed's *default* client, which may belong to another cluster: point it
        # at ours, and let our future alone hold the instance (close() releases it).
        actor._client, actor._future = client, future
        own = {"_spec": spec, "_cluster": cluster, "_client": client, "_future": future, "_actor": actor,
               "_topic": topic, "_closed": False, "_lost": None}
        for key, value in own.items():
            object.__setattr__(self, key, value)

    # --- calls --------------------------------------------------------------------------------------------------
    def _lost_error(self, exc: BaseException | None, what: str) -> ModuleLostError | None:
        """The :class:`ModuleLostError` for a transport failure of a call (None for the user's own exceptions)."""
        if exc is not None and (is_remote_exception(exc) or not isinstance(exc, (OSError, RuntimeError))):
            return None
        detail = (
            f"the worker holding this {self._spec.name} instance ({self._actor._address}) is gone, and the "
            f"instance's state with it. Create a new one with rh_iac.module({self._spec.name}).to(cluster, ...)."
        )
        object.__setattr__(self, "_lost", detail)
        return ModuleLostError(f"{what}: {detail}")

    def _check_usable(self, what: str) -> None:
        if self._closed:
            raise ModuleClosedError(f"{what}: this {self._spec.name} instance was closed; create a new one with .to().")
        if self._lost is not None:
            raise ModuleLostError(f"{what}: {self._lost}")

    def _start(self, method: str, args: tuple, kwargs: dict) -> Call:
        what = f"{self._spec.name}.{method}()"
        self._check_usable(what)
        call_id = uuid.uuid4().hex
        actor = self._actor
        settle = await_output(call_id) if self._topic else None  # registered before the call can end
        try:
            future = actor.call(call_id, method, args, kwargs, self._topic)
        except RuntimeError as exc:  # distributed: "Worker holding Actor was lost"
            discard_output_wait(call_id)
            raise self._lost_error(exc, what) from exc
        return Call(future, what, timeout=self._spec.call_options.timeout, cancel=lambda: actor.cancel(call_id),
                    translate=lambda exc: self._lost_error(exc, what), settle=settle)

    def _read(self, attribute: str) -> Any:
        what = f"{self._spec.name}.{attribute}"
        self._check_usable(what)
        try:
            future = self._actor.read(attribute)
        except RuntimeError as exc:
            raise self._lost_error(exc, what) from exc
        return Call(future, what, timeout=self._spec.call_options.timeout, cancel=lambda: None,
                    translate=lambda exc: self._lost_error(exc, what)).result()

    def method(self, name: str) -> RemoteMethod:
        """The remote method ``name``, also for names the proxy itself uses (``proxy.method("close")()``)."""
        return RemoteMethod(self, name)

    def __getattr__(self, name: str) -> Any:
        if name in self._OWN or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)  # pickle, copy, IPython probes: never a round trip
        if _is_method(inspect.getattr_static(self._spec.cls, name, _MISSING)):
            return RemoteMethod(self, name)
        return self._read(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"cannot set {name!r} on a remote {self._spec.name}: its attributes are read-only here; change the "
            f"instance's state through one of its methods."
        )

    def __dir__(self) -> list[str]:
        return sorted({*dir(type(self)), *(n for n in dir(self._spec.cls) if not n.startswith("__"))})

    def __reduce__(self):
        raise TypeError(
            f"a RemoteModule ({self._spec.name}) cannot be pickled: it is a handle on one instance held by this "
            f"process's client. Pass the data its methods return instead."
        )

    # --- lifetime -----------------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the instance: the scheduler forgets the actor and its worker drops the object. Idempotent."""
        if self._closed:
            return
        object.__setattr__(self, "_closed", True)
        try:
            self._future.release()
        except Exception:  # noqa: BLE001 - a client that is already closed released everything anyway
            pass

    def __enter__(self) -> "RemoteModule[T]":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "lost" if self._lost is not None else f"on {self._actor._address}"
        return f"<RemoteModule {self._spec.name} of {getattr(self._cluster, 'label', self._cluster)}, {state}>"


def module(cls: type[T], *, name: str | None = None) -> ModuleSpec[T]:
    """Wrap the class ``cls`` so that ``module(cls).to(cluster, *init_args)`` creates an instance on the cluster."""
    return ModuleSpec(cls, name=name)
