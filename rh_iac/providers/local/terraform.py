"""How the local provider's resources are rendered for the Terraform engine, and how its plugin is installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from rh_iac.engines.terraform import TerraformBlock, TerraformProviderSpec, ref
from rh_iac.model import Blob, Cluster, Folder, Resource, Secret, Stack, Table

NAME = "rhlocal"
SOURCE = "rh-iac/rhlocal"

#: attributes of each resource type that RNS records as its outputs
OUTPUTS = {
    "cluster": ("scheduler_address", "dashboard_url", "tls"),
    "folder": ("url",),
    "table": ("url",),
    "secret": ("fingerprint",),
}

_TYPES = {"cluster": "rhlocal_dask_cluster", "folder": "rhlocal_folder", "table": "rhlocal_table",
          "secret": "rhlocal_secret"}


def install_plugin(plugin_dir: Path) -> Path:
    """Write the ``terraform-provider-rhlocal`` executable that runs this Python's provider plugin."""
    plugin_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    exe = plugin_dir / f"terraform-provider-{NAME}"
    text = (
        f"#!{sys.executable}\n"
        "from rh_iac.providers.local.plugin import main\n"
        f"main(cache_dir={str(plugin_dir)!r})\n"
    )
    if not exe.exists() or exe.read_text() != text:
        tmp = exe.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o700)
        os.replace(tmp, exe)
    return plugin_dir


def provider_spec(stack: Stack, state_dir: Path, project_dir: Path, plugin_dir: Path) -> TerraformProviderSpec:
    return TerraformProviderSpec(
        name=NAME,
        source=SOURCE,
        config={
            "stack": stack.name,
            "state_dir": str(state_dir),
            "project_dir": str(project_dir),
            "secret_env_vars": sorted({s.from_env for s in stack.resources("secret") if s.from_env}),
        },
        plugin_dir=install_plugin(plugin_dir),
    )


def _remote(folder: Folder) -> bool:
    """A folder on existing remote storage (``s3://bucket/prefix``...): used, not provisioned, by this provider."""
    return bool(folder.path) and "://" in folder.path and not folder.path.startswith("file://")


def render(resource: Resource) -> TerraformBlock | None:
    """The Terraform resource for ``resource``; ``None`` for what is not infrastructure here: an Env, a secret kept
    in Vault, a folder on existing remote storage (and its tables and blobs)."""
    attributes: dict[str, Any]
    if isinstance(resource, (Folder, Table, Blob)) and _remote(resource if isinstance(resource, Folder)
                                                               else resource.folder):
        return None
    if isinstance(resource, Cluster):
        attributes = {
            "name": resource.name,
            "workers": resource.workers,
            "min_workers": resource.min_workers,
            "max_workers": resource.max_workers,
            "threads_per_worker": resource.threads_per_worker,
            "memory_limit": resource.memory_limit,
            "autostop_mins": resource.autostop_mins,
            "env_vars": dict(resource.env.env_vars) if resource.env else {},
            # what the workers' virtualenv is built from; no Env means the workers run on the deploying Python
            "env_name": resource.env.name if resource.env else None,
            "env_packages": list(resource.env.packages) if resource.env else None,
            "env_setup": list(resource.env.setup) if resource.env else None,
        }
    elif isinstance(resource, Folder):
        attributes = {"name": resource.name, "path": resource.path}
    elif isinstance(resource, Table):
        attributes = {
            "name": resource.name,
            "folder_url": ref(_TYPES["folder"], resource.folder.name, "url"),
            "partition_on": resource.partition_on,
        }
    elif isinstance(resource, Secret) and resource.store == "vault":
        return None  # the value lives in Vault: nothing to provision here
    elif isinstance(resource, Secret):
        attributes = {"name": resource.name, "from_env": resource.from_env, "generate": resource.generate}
    else:
        return None
    attributes = {k: v for k, v in attributes.items() if v is not None}
    return TerraformBlock(_TYPES[resource.kind], resource.name, attributes, OUTPUTS[resource.kind])


def health(resource: Resource, attributes: dict[str, Any], state_dir: Path) -> tuple[str, str]:
    """``(state, detail)`` of a deployed resource, asked of the resource itself: healthy, degraded or stopped."""
    from rh_iac.providers.local import dask_cluster, secret, storage

    if isinstance(resource, Cluster):
        h = dask_cluster.health(resource.name, attributes, state_dir)
        if h["scheduler"] != "up":
            return "stopped", f"scheduler down at {h.get('address')}; `invoke deploy` restarts it"
        if resource.adaptive:
            detail = (f"{h['workers_alive']} workers (adaptive {resource.min_workers}-{resource.max_workers}), "
                      f"{h.get('address')}")
            return "healthy", detail
        detail = f"{h['workers_alive']}/{resource.workers} workers, {h.get('address')}"
        return ("healthy" if h["workers_alive"] == resource.workers else "degraded"), detail
    if isinstance(resource, Folder):
        ok = storage.read_folder(attributes) is not None
        return ("healthy", attributes["url"]) if ok else ("stopped", f"{attributes['url']} is missing")
    if isinstance(resource, Table):
        ok = storage.read_table(attributes) is not None
        return ("healthy", attributes["url"]) if ok else ("stopped", f"folder of {attributes['url']} is missing")
    if isinstance(resource, Secret):
        ok = secret.read(resource.name, attributes, state_dir) is not None
        return ("healthy", "value stored, encrypted") if ok else ("stopped", "value missing from the local store")
    return "healthy", ""


def preflight(stack: Stack, state_dir: Path) -> None:
    """Checks that need the deploying environment, made before Terraform runs: every secret has a value source."""
    from rh_iac.errors import SecretError
    from rh_iac.providers.local import secret

    for resource in stack.resources("secret"):
        if resource.store == "vault":
            if resource.from_env or resource.generate:
                raise SecretError(
                    f"{resource.label}: writing values into Vault at deploy time is not supported yet; put the "
                    f"value in Vault (`vault kv put {resource.vault_mount}/{resource.vault_path}/{resource.name} "
                    f"value=...`) and declare the Secret with store='vault' alone."
                )
            continue
        if (not resource.generate and secret.incoming_value(resource.name, resource.from_env) is None
                and not secret.store_for(state_dir).exists(resource.name)):
            raise SecretError(
                f"{resource.label}: environment variable {resource.from_env} is not set and no value is stored "
                f"yet; export it before deploying, or declare the secret with generate=True."
            )


def cleanup(stack: Stack, state_dir: Path) -> None:
    """After a destroy: stop and remove what no state records any more, such as an autostopped cluster's folder
    (its TLS keys, logs, and any process still carrying its certificate)."""
    from rh_iac.providers.local import dask_cluster

    for resource in stack.resources("cluster"):
        dask_cluster.delete(resource.name, {}, state_dir)
