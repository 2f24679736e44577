"""The local provider under Pulumi: dynamic providers over the same drivers the Terraform plugin uses.

Each ``pulumi.dynamic.ResourceProvider`` here is a thin adapter from Pulumi's check/diff/create/read/update/delete
to :mod:`~rh_iac.providers.local.dask_cluster`, :mod:`~rh_iac.providers.local.storage` and
:mod:`~rh_iac.providers.local.secret`, as :mod:`~rh_iac.providers.local.plugin` is for Terraform, so ``pulumi up -s
local`` and ``invoke deploy`` provision the same things. A provider is pickled into Pulumi's state by reference: it
carries no data, everything it needs (stack, state folder, project folder) travels in the resource's inputs. A
secret's inputs and outputs carry the environment variable's *name* and a keyed fingerprint, never the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from rh_iac.model import Cluster, Folder, Secret, Stack, Table
from rh_iac.providers.local import dask_cluster, secret, storage
from rh_iac.providers.local.terraform import OUTPUTS, _remote, cleanup, health, preflight

__all__ = ["OUTPUTS", "render", "health", "preflight", "cleanup", "DaskClusterProvider", "FolderProvider",
           "TableProvider", "SecretProvider"]

#: inputs every local resource carries: where its driver keeps state
CONTEXT = ("stack", "state_dir", "project_dir")
CLUSTER_INPUTS = ("name", "workers", "min_workers", "max_workers", "threads_per_worker", "memory_limit",
                  "autostop_mins", "env_vars", "env_name", "env_packages", "env_setup", "scrub_env")


def _gone() -> ReadResult:
    """What read returns for a resource that no longer exists: Pulumi drops it from state, and ``up`` re-creates it."""
    return ReadResult("", {})


def _diff(olds: dict[str, Any], news: dict[str, Any], keys: tuple[str, ...], replace: tuple[str, ...]) -> DiffResult:
    changed = [k for k in keys if olds.get(k) != news.get(k)]
    return DiffResult(changes=bool(changed), replaces=[k for k in changed if k in replace],
                      delete_before_replace=True)


class DaskClusterProvider(ResourceProvider):
    """A TLS Dask scheduler and N workers on this machine (:mod:`~rh_iac.providers.local.dask_cluster`)."""

    serialize_as_secret_always = False

    @staticmethod
    def _spec(props: dict[str, Any]) -> dict[str, Any]:
        return {
            "scrub_env": list(props.get("scrub_env") or []),
            "workers": int(props["workers"]),
            "min_workers": props.get("min_workers"),
            "max_workers": props.get("max_workers"),
            "threads_per_worker": int(props["threads_per_worker"]),
            "memory_limit": props["memory_limit"],
            "autostop_mins": float(props["autostop_mins"]),
            "env_vars": dict(props.get("env_vars") or {}),
            "env_name": props.get("env_name"),
            "env_packages": list(props.get("env_packages") or []),
            "env_setup": list(props.get("env_setup") or []),
        }

    @staticmethod
    def _outs(props: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        keep = {k: props.get(k) for k in (*CONTEXT, *CLUSTER_INPUTS)}
        return {**keep, "scheduler_address": state["scheduler_address"], "dashboard_url": state["dashboard_url"],
                "scheduler_pid": int(state["scheduler_pid"]), "worker_pids": [int(p) for p in state["worker_pids"]],
                "tls": dict(state["tls"])}

    def create(self, props: dict[str, Any]) -> CreateResult:
        state = dask_cluster.create(props["name"], self._spec(props), Path(props["state_dir"]), props["stack"])
        return CreateResult(props["name"], self._outs(props, state))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Reality: gone if the scheduler is down; else the live workers, so a killed one shows as drift."""
        state = dask_cluster.read(props["name"], props, Path(props["state_dir"]))
        if state is None:
            return _gone()
        if props.get("max_workers") is not None:  # adaptive: the scheduler's scaler owns the worker count
            return ReadResult(id_, {**props, "workers": state["workers"]})
        return ReadResult(id_, {**props, "workers": state["workers"], "worker_pids": list(state["worker_pids"])})

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return _diff(olds, news, (*CONTEXT, *CLUSTER_INPUTS), ("name", "stack", "state_dir"))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        state = dask_cluster.update(news["name"], olds, self._spec(news), Path(news["state_dir"]), news["stack"])
        return UpdateResult(self._outs(news, state))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        dask_cluster.delete(props["name"], props, Path(props["state_dir"]))


class FolderProvider(ResourceProvider):
    """A directory addressed by a ``file://`` URL."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        out = storage.create_folder(props["name"], props.get("path"), Path(props["state_dir"]), props["project_dir"])
        return CreateResult(props["name"], {**props, **out})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props) if storage.read_folder(props) is not None else _gone()

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return _diff(olds, news, (*CONTEXT, "name", "path"), (*CONTEXT, "name", "path"))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult({**olds, **news, "url": olds["url"], "created": olds.get("created")})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        storage.delete_folder(props)


class TableProvider(ResourceProvider):
    """A parquet dataset directory inside a folder."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(props["name"], {**props, **storage.create_table(props["name"], props["folder_url"])})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props) if storage.read_table(props) is not None else _gone()

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return _diff(olds, news, (*CONTEXT, "name", "folder_url", "partition_on"),
                     (*CONTEXT, "name", "folder_url"))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult({**olds, "partition_on": news.get("partition_on")})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        storage.delete_table(props)


class SecretProvider(ResourceProvider):
    """A value in the encrypted local store; Pulumi holds its fingerprint, never the value."""

    serialize_as_secret_always = False

    @staticmethod
    def _outs(props: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        return {**{k: props.get(k) for k in (*CONTEXT, "name", "from_env", "generate")}, **out}

    def create(self, props: dict[str, Any]) -> CreateResult:
        out = secret.create(props["name"], props.get("from_env"), bool(props.get("generate")),
                            Path(props["state_dir"]))
        return CreateResult(props["name"], self._outs(props, out))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        state = secret.read(props["name"], props, Path(props["state_dir"]))
        return _gone() if state is None else ReadResult(id_, state)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """A new value offered by the environment changes the fingerprint: an update, planned without the value."""
        result = _diff(olds, news, (*CONTEXT, "name", "from_env", "generate"), (*CONTEXT, "name"))
        planned = secret.planned_fingerprint(news["name"], news.get("from_env"), olds.get("fingerprint"),
                                             Path(news["state_dir"]))
        if planned != olds.get("fingerprint"):
            result.changes = True
        return result

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        out = secret.update(news["name"], news.get("from_env"), bool(news.get("generate")), Path(news["state_dir"]))
        return UpdateResult(self._outs(news, out))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        secret.delete(props["name"], Path(props["state_dir"]))


# --- the resources -------------------------------------------------------------------------------------------------
class DaskCluster(pulumi.dynamic.Resource, module="rh-local", name="DaskCluster"):
    scheduler_address: pulumi.Output[str]
    dashboard_url: pulumi.Output[str]
    tls: pulumi.Output[dict]


class LocalFolder(pulumi.dynamic.Resource, module="rh-local", name="Folder"):
    url: pulumi.Output[str]


class LocalTable(pulumi.dynamic.Resource, module="rh-local", name="Table"):
    url: pulumi.Output[str]


class LocalSecret(pulumi.dynamic.Resource, module="rh-local", name="Secret"):
    fingerprint: pulumi.Output[str]


def _computed(kind: str) -> dict[str, None]:
    """Output properties are declared as ``None`` inputs, so the resource object exposes them."""
    return {k: None for k in OUTPUTS[kind]}


def render(stack: Stack, state_dir: Path) -> dict[str, dict[str, Any]]:
    """Create the dynamic resources of ``stack`` inside a Pulumi program; ``{name: {output key: Output}}``.

    Not rendered (no entry), as for the Terraform engine: an Env (part of the clusters that use it), a secret kept in
    Vault, a folder on existing remote storage and its tables and blobs."""
    from rh_iac.project import STATE_FOLDER, Project

    state_dir = Path(state_dir).resolve()
    root = state_dir.parents[1] if state_dir.parent.name == STATE_FOLDER else Project.find().root
    context = {"stack": stack.name, "state_dir": str(state_dir), "project_dir": str(root)}
    scrub = sorted({s.from_env for s in stack.resources("secret") if s.from_env})
    folders: dict[str, LocalFolder] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for resource in stack:
        if isinstance(resource, Cluster):
            env = resource.env
            props = {**context, "name": resource.name, "workers": resource.workers,
                     "min_workers": resource.min_workers, "max_workers": resource.max_workers,
                     "threads_per_worker": resource.threads_per_worker, "memory_limit": resource.memory_limit,
                     "autostop_mins": resource.autostop_mins, "env_vars": dict(env.env_vars) if env else {},
                     "env_name": env.name if env else None, "env_packages": list(env.packages) if env else None,
                     "env_setup": list(env.setup) if env else None, "scrub_env": scrub}
            cluster = DaskCluster(DaskClusterProvider(), resource.name, {**props, **_computed("cluster")})
            outputs[resource.name] = {"scheduler_address": cluster.scheduler_address,
                                      "dashboard_url": cluster.dashboard_url, "tls": cluster.tls}
        elif isinstance(resource, Folder) and not _remote(resource):
            folder = LocalFolder(FolderProvider(), resource.name,
                                 {**context, "name": resource.name, "path": resource.path, **_computed("folder")})
            folders[resource.name] = folder
            outputs[resource.name] = {"url": folder.url}
        elif isinstance(resource, Table) and resource.folder.name in folders:
            table = LocalTable(TableProvider(), resource.name,
                               {**context, "name": resource.name, "folder_url": folders[resource.folder.name].url,
                                "partition_on": list(resource.partition_on), **_computed("table")})
            outputs[resource.name] = {"url": table.url}
        elif isinstance(resource, Secret) and resource.store != "vault":
            value = LocalSecret(SecretProvider(), resource.name,
                                {**context, "name": resource.name, "from_env": resource.from_env,
                                 "generate": resource.generate, **_computed("secret")})
            outputs[resource.name] = {"fingerprint": value.fingerprint}
    return outputs
