"""Code references: how a saved Function or Module names its code in RNS, and how ``load`` finds it again.

A record holds the module and qualified name of the code (``{"module": "jobs", "qualname": "double"}``), never
pickled code: a reviewer can read it in a pull request, and the code that runs is the code in the checkout. So only
code importable by name can be saved; lambdas, nested functions and code of ``__main__`` are refused with the fix.

Record shape (``type`` is ``"function"`` or ``"module"``)::

    {"schema_version": 1, "name": "double", "type": "function", "provider": "local",
     "spec": {"module": "jobs", "qualname": "double", "cluster": "dev-cluster", "timeout": null, ...},
     "outputs": {}, "status": "deployed"}
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rh_iac.errors import CodeReferenceError, RNSError, ResourceNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from rh_iac.model import Cluster
    from rh_iac.project import Project

__all__ = ["CodeReferenceError", "CODE_KINDS", "code_reference", "resolve_reference", "save_code_record"]

#: RNS record types that hold a code reference, and how errors call each.
CODE_KINDS = {"function": "function", "module": "class"}
RNS_SCHEMA_VERSION = 1  # the same schema as operations.RNS_SCHEMA_VERSION (not imported: it pulls in the engines)


def code_reference(obj: Any, what: str = "function") -> dict[str, str]:
    """``{"module", "qualname"}`` of ``obj``, checked by importing it back; raises :class:`CodeReferenceError`."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    shown = f"{what} {qualname or getattr(obj, '__name__', None) or repr(obj)}"
    fix = "define it with `def`/`class` at the top level of a module of the project (e.g. jobs.py) and import it"
    if not isinstance(qualname, str) or not isinstance(module, str):
        raise CodeReferenceError(f"cannot save {shown}: it has no module and qualified name to import it by; {fix}.")
    if "<lambda>" in qualname:
        raise CodeReferenceError(f"cannot save {shown} of module {module}: a lambda has no importable name; {fix}.")
    if "<locals>" in qualname:
        outer = qualname.split(".<locals>", 1)[0]
        raise CodeReferenceError(
            f"cannot save {shown}: it is defined inside {outer}(), so it cannot be imported by name; "
            f"move it out of {outer}() to the top level of module {module}."
        )
    if module in ("__main__", "__mp_main__"):
        raise CodeReferenceError(
            f"cannot save {shown}: it is defined in __main__ (a script, notebook or -c command), which other "
            f"processes cannot import; {fix} from there."
        )
    try:
        found = _lookup(importlib.import_module(module), qualname)
    except (ImportError, AttributeError) as exc:
        raise CodeReferenceError(
            f"cannot save {shown}: importing {module}.{qualname} fails here ({type(exc).__name__}: {exc}); {fix}."
        ) from exc
    if found is not obj:
        raise CodeReferenceError(
            f"cannot save {shown}: {module}.{qualname} names a different object ({found!r}), e.g. the name was "
            f"rebound; give the {what} its own top-level name."
        )
    return {"module": module, "qualname": qualname}


def _lookup(module: Any, qualname: str) -> Any:
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _ensure_on_path(root: Path) -> None:
    """Put the project root on ``sys.path`` unless it is there: saved code is imported relative to it.

    It goes last, so that a project file named like a module of the standard library or of an installed package
    cannot shadow that module for the rest of this process.
    """
    target = os.path.realpath(root)
    for entry in sys.path:
        if os.path.realpath(entry or os.getcwd()) == target:
            return
    sys.path.append(str(root))
    importlib.invalidate_caches()


def resolve_reference(record: dict[str, Any], root: Path) -> Any:
    """The object a function/module record refers to, imported with the project root on ``sys.path``."""
    name, kind, spec = record["name"], record["type"], record.get("spec") or {}
    module, qualname = spec.get("module"), spec.get("qualname")
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise RNSError(f"RNS record {name!r} ({kind}) lacks its code reference (spec.module, spec.qualname); "
                       f"save it again with .save({name!r}).")
    _ensure_on_path(root)
    try:
        obj = _lookup(importlib.import_module(module), qualname)
    except (ImportError, AttributeError) as exc:
        raise RNSError(
            f"RNS record {name!r} refers to {module}.{qualname}, which cannot be imported here "
            f"({type(exc).__name__}: {exc}); run from the project at {root} (or set RH_IAC_PROJECT), check that "
            f"the code is still there, or save the {kind} again."
        ) from exc
    if kind == "module" and not isinstance(obj, type):
        raise RNSError(f"RNS record {name!r} is a module but {module}.{qualname} is not a class ({obj!r}).")
    if kind == "function" and not callable(obj):
        raise RNSError(f"RNS record {name!r} is a function but {module}.{qualname} is not callable ({obj!r}).")
    return obj


def save_code_record(
    name: str,
    kind: str,
    obj: Any,
    cluster: "Cluster | None",
    options: dict[str, Any],
    *,
    project: "Project | None" = None,
) -> dict[str, Any]:
    """Write and commit the RNS record of a Function (``kind="function"``) or Module (``"module"``) bound to
    ``cluster``; returns the record. The cluster must have an RNS record itself (deploy its stack first)."""
    from rh_iac.model import validate_name
    from rh_iac.project import Project

    if kind not in CODE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(CODE_KINDS)}, got {kind!r}.")
    label = "Function" if kind == "function" else "Module"
    validate_name(name, label)
    reference = code_reference(obj, CODE_KINDS[kind])
    cluster_name = getattr(cluster, "name", None)
    if getattr(cluster, "kind", None) != "cluster" or not isinstance(cluster_name, str):
        raise RNSError(f"cannot save {label} {name!r}: it must be bound to a Cluster (.to(cluster)), got {cluster!r}.")
    project = project or Project.find()
    rns = project.rns()
    try:
        cluster_record = rns.read(cluster_name)
    except ResourceNotFoundError:
        raise RNSError(
            f"cannot save {label} {name!r}: its cluster {cluster_name!r} has no RNS record in {rns.dir}, so no other "
            f"process could find it; deploy the cluster's stack (`invoke deploy`) first."
        ) from None
    if cluster_record["type"] != "cluster":
        raise RNSError(f"cannot save {label} {name!r}: RNS name {cluster_name!r} is a {cluster_record['type']}, "
                       f"not a cluster.")
    try:
        existing = rns.read(name)
    except ResourceNotFoundError:
        existing = None
    if existing is not None and existing["type"] != kind:
        raise RNSError(
            f"cannot save {label} {name!r}: that RNS name already belongs to a {existing['type']}; choose another "
            f"name (saving never replaces a resource of another type)."
        )
    record = {
        "schema_version": RNS_SCHEMA_VERSION,
        "name": name,
        "type": kind,
        "provider": cluster_record.get("provider", getattr(cluster, "provider", None)),
        "spec": {**reference, "cluster": cluster_name, **options},
        "outputs": {},
        "status": "deployed",
    }
    rns.write(record)
    rns.commit(f"rns: save {kind} {name}")
    return record
