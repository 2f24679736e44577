"""Load a resource back from its RNS record, in any process: ``rh_iac.load("dev-cluster").client()``.

Saved functions and modules come back bound to their cluster: ``rh_iac.load("double")(21)`` runs ``double`` there,
``rh_iac.load("counter")(start=1)`` creates the instance there (see :mod:`rh_iac.coderef` for the records).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from rh_iac.errors import RNSError
from rh_iac.model import Blob, Cluster, Env, Folder, Resource, Secret, Table
from rh_iac.project import Project

if TYPE_CHECKING:  # pragma: no cover
    from rh_iac.compute import RemoteFunction
    from rh_iac.modules import ModuleSpec

#: what :func:`load` returns: a declared resource, or saved code bound to its cluster
Loaded = Union[Resource, "RemoteFunction", "ModuleSpec"]


def _build(record: dict[str, Any], rns: Any, root: Path) -> Resource:
    """The resource a record describes, with its outputs (if deployed) made usable in this checkout."""
    kind, name, spec = record["type"], record["name"], record.get("spec") or {}
    provider = record.get("provider")
    try:
        if kind == "cluster":
            env = _build(rns.read(spec["env"]), rns, root) if spec.get("env") else None
            size = ({"min_workers": spec.get("min_workers"), "max_workers": spec["max_workers"]}
                    if spec.get("max_workers") is not None else {"workers": spec["workers"]})
            resource: Resource = Cluster(
                name, **size, threads_per_worker=spec["threads_per_worker"],
                memory_limit=spec["memory_limit"], autostop_mins=spec["autostop_mins"], env=env, provider=provider,
            )
        elif kind == "folder":
            resource = Folder(name, path=spec.get("path"), storage_options=spec.get("storage_options"),
                              provider=provider)
        elif kind == "blob":
            resource = Blob(name, folder=_build(rns.read(spec["folder"]), rns, root), provider=provider)
        elif kind == "table":
            folder = _build(rns.read(spec["folder"]), rns, root)
            resource = Table(name, folder=folder, partition_on=spec.get("partition_on", []), provider=provider)
        elif kind == "secret":
            resource = Secret.from_record(record)
        elif kind == "env":
            resource = Env(name, packages=spec.get("packages", []), env_vars=spec.get("env_vars"),
                           setup=spec.get("setup", []), provider=provider)
        else:
            raise RNSError(f"RNS record {name!r} has unknown type {kind!r}; expected cluster, folder, table, blob, "
                           f"secret, env, function or module.")
    except KeyError as exc:
        raise RNSError(f"RNS record {name!r} ({kind}) lacks spec field {exc.args[0]!r}; redeploy its stack.") from None
    resource.status = record.get("status")
    resource.outputs = _absolute(dict(record.get("outputs") or {}), root) if resource.status == "deployed" else {}
    return resource


#: how RNS records write the project folder (operations.PROJECT_PLACEHOLDER; not imported from there, because
#: operations pulls in the IaC engines)
_PLACEHOLDER = "{project}"


def _expand(value: Any, root: Path) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, root) for k, v in value.items()}
    if isinstance(value, str):
        for prefix, replacement in (("file://" + _PLACEHOLDER, root.as_uri()), (_PLACEHOLDER, str(root))):
            if value == prefix or value.startswith(prefix + "/"):
                return replacement + value[len(prefix):]
    return value


def _absolute(outputs: dict[str, Any], root: Path) -> dict[str, Any]:
    """RNS records project paths relative to the project (see operations._portable); make them usable here.

    Both spellings are understood: ``{project}/...`` (and ``file://{project}/...``), and the older TLS paths
    written relative to the project root.
    """
    outputs = _expand(outputs, root)
    tls = outputs.get("tls")
    if isinstance(tls, dict):
        outputs["tls"] = {k: v if not isinstance(v, str) or os.path.isabs(v) else str(root / v) for k, v in tls.items()}
    return outputs


def _cluster(name: str, rns: Any, root: Path, for_record: str) -> Cluster:
    record = rns.read(name)
    if record["type"] != "cluster":
        raise RNSError(f"RNS record {for_record!r} runs on {name!r}, which is a {record['type']}, not a cluster; "
                       f"save it again bound to a cluster.")
    return _build(record, rns, root)  # type: ignore[return-value]


def _build_code(record: dict[str, Any], rns: Any, project: Project) -> "RemoteFunction | ModuleSpec":
    """A saved function (a RemoteFunction) or module (a ModuleSpec), imported by reference, bound to its cluster."""
    from rh_iac.coderef import resolve_reference

    name, kind, spec = record["name"], record["type"], record.get("spec") or {}
    if not isinstance(spec.get("cluster"), str):
        raise RNSError(f"RNS record {name!r} ({kind}) lacks spec field 'cluster'; save it again with .save({name!r}).")
    obj = resolve_reference(record, project.root)
    cluster = _cluster(spec["cluster"], rns, project.root, name)
    if kind == "function":
        from rh_iac.compute import Function

        return Function(obj).to(cluster, timeout=spec.get("timeout"), retries=spec.get("retries") or 0,
                                stream_logs=bool(spec.get("stream_logs", False)))
    from rh_iac.modules import ModuleSpec

    return ModuleSpec(obj).options(timeout=spec.get("timeout"),
                                   stream_logs=bool(spec.get("stream_logs", False))).bind(cluster)


def load(name: str, project: Project | None = None) -> Loaded:
    """What is recorded under ``name``: a resource with its deployed outputs (address, URLs) filled in, or a saved
    function (a :class:`~rh_iac.compute.RemoteFunction`) or module (a :class:`~rh_iac.modules.ModuleSpec`) bound to
    its cluster. Saved code is imported by name, with the project root put on ``sys.path`` if needed."""
    project = project or Project.find()
    rns = project.rns()
    record = rns.read(name)
    if record["type"] in ("function", "module"):
        return _build_code(record, rns, project)
    return _build(record, rns, project.root)
