"""The local provider as a real Terraform provider plugin, served over Terraform's plugin protocol by ``tf``.

Terraform runs this module as ``terraform-provider-rhlocal`` (see :mod:`rh_iac.providers.local.terraform`), so plan,
refresh, drift and destroy are Terraform's own. Each resource class is a thin adapter from Terraform's
Create/Read/Update/Delete to a driver module that knows nothing of Terraform.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, Callable

from tf import schema, types
from tf.iface import Provider, Resource
from tf.types import Unknown

from rh_iac.errors import RhIacError
from rh_iac.providers.local import dask_cluster, secret, storage

PROVIDER_SOURCE = "registry.terraform.io/rh-iac/rhlocal"


def _attr(name: str, type_: Any, **kw: Any) -> schema.Attribute:
    return schema.Attribute(name, type_, **kw)


def _computed(name: str, type_: Any) -> schema.Attribute:
    return schema.Attribute(name, type_, computed=True)


class _LocalResource(Resource):
    """Common plumbing: the provider's configuration, and driver errors turned into Terraform diagnostics."""

    def __init__(self, provider: "LocalProvider") -> None:
        self.provider = provider

    @property
    def state_dir(self) -> Path:
        return Path(self.provider.config["state_dir"])

    def _guard(self, ctx: Any, action: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RhIacError as exc:  # an expected failure: its message says it all (and names the fix)
            ctx.diagnostics.add_error(f"{ctx.type_name}: {action} failed: {exc}", "")
            return None
        except Exception as exc:  # a bug: every failure must reach Terraform as a diagnostic, never kill the plugin
            ctx.diagnostics.add_error(f"{ctx.type_name}: {action} failed: {exc}", traceback.format_exc(limit=5))
            return None


class DaskCluster(_LocalResource):
    """``rhlocal_dask_cluster``: a TLS Dask scheduler and N nanny-supervised workers on this machine."""

    @classmethod
    def get_name(cls) -> str:
        return "dask_cluster"

    @classmethod
    def get_schema(cls) -> schema.Schema:
        return schema.Schema(
            version=1,
            attributes=[
                _attr("name", types.String(), required=True, requires_replace=True),
                _attr("workers", types.Number(), required=True),
                _attr("min_workers", types.Number(), optional=True),
                _attr("max_workers", types.Number(), optional=True),
                _attr("threads_per_worker", types.Number(), required=True),
                _attr("memory_limit", types.String(), required=True),
                _attr("autostop_mins", types.Number(), required=True),
                _attr("env_vars", types.Map(types.String()), optional=True),
                _attr("env_name", types.String(), optional=True),
                _attr("env_packages", types.List(types.String()), optional=True),
                _attr("env_setup", types.List(types.String()), optional=True),
                _computed("id", types.String()),
                _computed("scheduler_address", types.String()),
                _computed("dashboard_url", types.String()),
                _computed("scheduler_pid", types.Number()),
                _computed("worker_pids", types.List(types.Number())),
                _computed("tls", types.Map(types.String())),
            ],
        )

    def _spec(self, planned: dict) -> dict:
        return {
            "scrub_env": list(self.provider.config.get("secret_env_vars") or []),
            "workers": int(planned["workers"]),
            "min_workers": planned.get("min_workers"),
            "max_workers": planned.get("max_workers"),
            "threads_per_worker": int(planned["threads_per_worker"]),
            "memory_limit": planned["memory_limit"],
            "autostop_mins": float(planned["autostop_mins"]),
            "env_vars": dict(planned.get("env_vars") or {}),
            "env_name": planned.get("env_name"),
            "env_packages": list(planned.get("env_packages") or []),
            "env_setup": list(planned.get("env_setup") or []),
        }

    def _state(self, config: dict, driver_state: dict) -> dict:
        return {
            **{k: config.get(k) for k in ("name", "workers", "min_workers", "max_workers", "threads_per_worker",
                                          "memory_limit",
                                          "autostop_mins", "env_vars", "env_name", "env_packages",
                                          "env_setup")},
            "id": config["name"],
            "scheduler_address": driver_state["scheduler_address"],
            "dashboard_url": driver_state["dashboard_url"],
            "scheduler_pid": driver_state["scheduler_pid"],
            "worker_pids": list(driver_state["worker_pids"]),
            "tls": dict(driver_state["tls"]),
        }

    def create(self, ctx, planned):
        stack = self.provider.config["stack"]
        state = self._guard(ctx, "create", lambda: dask_cluster.create(
            planned["name"], self._spec(planned), self.state_dir, stack))
        return None if state is None else self._state(planned, state)

    def read(self, ctx, current):
        state = self._guard(ctx, "read", lambda: dask_cluster.read(current["name"], current, self.state_dir))
        if state is None:
            return None
        # Read reports reality: the number of live workers is what the plan compares with the declaration. An
        # adaptive cluster's workers come and go with the load (its scheduler owns them): Terraform tracks its
        # scheduler, and `status` shows the workers.
        if current.get("max_workers") is not None:
            return {**current, "workers": state["workers"]}
        return {**current, "workers": state["workers"], "worker_pids": list(state["worker_pids"])}

    def plan(self, ctx, current, planned):
        if ctx.changed_fields:  # any change may restart workers (threads, memory, env_vars, the Env's packages)
            planned["worker_pids"] = Unknown
            if ctx.changed_fields & set(dask_cluster.SCHEDULER_SETTINGS):  # the scheduler itself restarts
                for key in ("scheduler_address", "dashboard_url", "scheduler_pid"):
                    planned[key] = Unknown
        return planned

    def update(self, ctx, current, planned):
        stack = self.provider.config["stack"]
        state = self._guard(ctx, "update", lambda: dask_cluster.update(
            planned["name"], current, self._spec(planned), self.state_dir, stack))
        return current if state is None else self._state(planned, state)

    def delete(self, ctx, current):
        self._guard(ctx, "delete", lambda: dask_cluster.delete(current["name"], current, self.state_dir))


class Folder(_LocalResource):
    """``rhlocal_folder``: a directory, addressed by a ``file://`` URL."""

    @classmethod
    def get_name(cls) -> str:
        return "folder"

    @classmethod
    def get_schema(cls) -> schema.Schema:
        return schema.Schema(attributes=[
            _attr("name", types.String(), required=True, requires_replace=True),
            _attr("path", types.String(), optional=True, requires_replace=True),
            _computed("id", types.String()),
            _computed("url", types.String()),
            _computed("created", types.Bool()),
        ])

    def create(self, ctx, planned):
        project_dir = self.provider.config["project_dir"]
        out = self._guard(ctx, "create", lambda: storage.create_folder(
            planned["name"], planned.get("path"), self.state_dir, project_dir))
        return None if out is None else {**planned, "id": planned["name"], **out}

    def read(self, ctx, current):
        return storage.read_folder(current)

    def update(self, ctx, current, planned):
        return {**current, **{k: planned[k] for k in ("name", "path")}}

    def delete(self, ctx, current):
        self._guard(ctx, "delete", lambda: storage.delete_folder(current))


class Table(_LocalResource):
    """``rhlocal_table``: a parquet dataset directory inside a folder."""

    @classmethod
    def get_name(cls) -> str:
        return "table"

    @classmethod
    def get_schema(cls) -> schema.Schema:
        return schema.Schema(attributes=[
            _attr("name", types.String(), required=True, requires_replace=True),
            _attr("folder_url", types.String(), required=True, requires_replace=True),
            _attr("partition_on", types.List(types.String()), optional=True),
            _computed("id", types.String()),
            _computed("url", types.String()),
            _computed("created", types.Bool()),
        ])

    def create(self, ctx, planned):
        out = self._guard(ctx, "create", lambda: storage.create_table(planned["name"], planned["folder_url"]))
        return None if out is None else {**planned, "id": planned["name"], **out}

    def read(self, ctx, current):
        return storage.read_table(current)

    def update(self, ctx, current, planned):
        return {**current, "partition_on": planned.get("partition_on")}

    def delete(self, ctx, current):
        self._guard(ctx, "delete", lambda: storage.delete_table(current))


class Secret(_LocalResource):
    """``rhlocal_secret``: a value in the encrypted local store. Terraform only ever holds its fingerprint."""

    @classmethod
    def get_name(cls) -> str:
        return "secret"

    @classmethod
    def get_schema(cls) -> schema.Schema:
        return schema.Schema(attributes=[
            _attr("name", types.String(), required=True, requires_replace=True),
            _attr("from_env", types.String(), optional=True),
            _attr("generate", types.Bool(), optional=True),
            _computed("id", types.String()),
            _computed("fingerprint", types.String()),
            _computed("store", types.String()),
        ])

    def create(self, ctx, planned):
        out = self._guard(ctx, "create", lambda: secret.create(
            planned["name"], planned.get("from_env"), bool(planned.get("generate")), self.state_dir))
        return None if out is None else {**planned, "id": planned["name"], **out}

    def read(self, ctx, current):
        return self._guard(ctx, "read", lambda: secret.read(current["name"], current, self.state_dir))

    def plan(self, ctx, current, planned):
        fingerprint = self._guard(ctx, "plan", lambda: secret.planned_fingerprint(
            planned["name"], planned.get("from_env"), current.get("fingerprint"), self.state_dir))
        if fingerprint != current.get("fingerprint"):
            planned["fingerprint"] = Unknown
        return planned

    def update(self, ctx, current, planned):
        out = self._guard(ctx, "update", lambda: secret.update(
            planned["name"], planned.get("from_env"), bool(planned.get("generate")), self.state_dir))
        return current if out is None else {**planned, "id": current["id"], **out}

    def delete(self, ctx, current):
        self._guard(ctx, "delete", lambda: secret.delete(current["name"], self.state_dir))


class LocalProvider(Provider):
    """The ``rhlocal`` provider; configured with the stack's name, its state folder and the project folder."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}

    def get_model_prefix(self) -> str:
        return "rhlocal_"

    def full_name(self) -> str:
        return PROVIDER_SOURCE

    def get_provider_schema(self, diags):
        return schema.Schema(attributes=[
            _attr("stack", types.String(), required=True),
            _attr("state_dir", types.String(), required=True),
            _attr("project_dir", types.String(), required=True),
            # names of the variables that carry secret values: never passed on to the processes we start
            _attr("secret_env_vars", types.List(types.String()), optional=True),
        ])

    def validate_config(self, diags, config):
        pass

    def configure_provider(self, diags, config):
        self.config = dict(config)

    def get_data_sources(self):
        return []

    def get_resources(self):
        return [DaskCluster, Folder, Table, Secret]


def main(cache_dir: str | None = None) -> None:
    """Entry point of the plugin executable; ``cache_dir`` keeps ``tf``'s TLS certificate cache out of HOME."""
    from tf import runner

    if cache_dir:
        runner._get_cert_cache_path = lambda: Path(cache_dir) / "plugin-cert.json"  # noqa: SLF001
    runner.run_provider(LocalProvider())
