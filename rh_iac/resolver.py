"""Load a resource back from its RNS record, in any process: ``rh_iac.load("dev-cluster").client()``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rh_iac.errors import RNSError
from rh_iac.model import Cluster, Env, Folder, Resource, Secret, Table
from rh_iac.project import Project


def _build(record: dict[str, Any], rns: Any) -> Resource:
    kind, name, spec = record["type"], record["name"], record.get("spec") or {}
    provider = record.get("provider")
    try:
        if kind == "cluster":
            env = _build(rns.read(spec["env"]), rns) if spec.get("env") else None
            resource: Resource = Cluster(
                name, workers=spec["workers"], threads_per_worker=spec["threads_per_worker"],
                memory_limit=spec["memory_limit"], autostop_mins=spec["autostop_mins"], env=env, provider=provider,
            )
        elif kind == "folder":
            resource = Folder(name, path=spec.get("path"), provider=provider)
        elif kind == "table":
            folder = _build(rns.read(spec["folder"]), rns)
            resource = Table(name, folder=folder, partition_on=spec.get("partition_on", []), provider=provider)
        elif kind == "secret":
            resource = Secret(name, from_env=spec.get("from_env"), generate=spec.get("generate", False),
                              provider=provider)
        elif kind == "env":
            resource = Env(name, packages=spec.get("packages", []), env_vars=spec.get("env_vars"),
                           setup=spec.get("setup", []), provider=provider)
        else:
            raise RNSError(f"RNS record {name!r} has unknown type {kind!r}; expected cluster, folder, table, "
                           f"secret or env.")
    except KeyError as exc:
        raise RNSError(f"RNS record {name!r} ({kind}) lacks spec field {exc.args[0]!r}; redeploy its stack.") from None
    resource.outputs = dict(record.get("outputs") or {}) if record.get("status") == "deployed" else {}
    return resource


def _absolute(outputs: dict[str, Any], root: Path) -> dict[str, Any]:
    """RNS records project paths relative to the project (see operations._portable); make them usable here."""
    tls = outputs.get("tls")
    if isinstance(tls, dict):
        outputs["tls"] = {k: v if os.path.isabs(v) else str(root / v) for k, v in tls.items()}
    return outputs


def load(name: str, project: Project | None = None) -> Resource:
    """The resource recorded under ``name``, with its deployed outputs (address, URLs) filled in."""
    project = project or Project.find()
    rns = project.rns()
    resource = _build(rns.read(name), rns)
    _absolute(resource.outputs, project.root)
    return resource
