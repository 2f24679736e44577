"""The effective settings of a cloud stack and its clusters: the declaration, else the Pulumi stack config, else a
built-in default — provider-neutral, so the aws and gcp renderings read them the same way.

The stack config is the ``rh_iac`` namespace of ``Pulumi.<stack>.yaml``::

    config:
      rh_iac:stack: aws                      # which stacks/<name>.py the Pulumi stack deploys
      rh_iac:region: us-east-1               # else aws:region / gcp:region
      rh_iac:schedulerInstanceType: t3.medium
      rh_iac:workerInstanceType: t3.large
      rh_iac:workers: 2                      # when the Cluster does not say workers=N
      rh_iac:spot: true                      # workers only; the scheduler is always on-demand
      rh_iac:spotFallback: false             # true: spot workers are created on-demand (no spot capacity)
      rh_iac:allowedCidrs: ["203.0.113.0/24"]
      rh_iac:sshCidrs: ["203.0.113.7/32"]    # port 22 stays closed without it
      rh_iac:diskGb: 50
      rh_iac:publicIp: true                  # nodes get a public address (scheduler reachable from allowedCidrs)
      rh_iac:allowPublic: false              # true admits 0.0.0.0/0 or ::/0 in the allowlists
      rh_iac:image: ami-0123456789abcdef0    # else the latest Ubuntu 24.04 for the machine's architecture
      rh_iac:workerDeathTimeout: 300         # seconds a worker waits for a lost scheduler before it powers off

and per cloud: ``rh_iac:vpcId`` / ``rh_iac:subnetId`` / ``rh_iac:createVpc`` (aws: an existing network, a new one,
else the default VPC), ``rh_iac:zone`` / ``rh_iac:network`` / ``rh_iac:subnetwork`` (gcp).

A value that does not parse raises :class:`~rh_iac.errors.StackConfigError` naming the key and the file; a
declaration's own field always wins over the config. Nothing here imports Pulumi: the renderings pass in the
config's ``get``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rh_iac.errors import DeclarationError, SecretError, StackConfigError
from rh_iac.model import (Cluster, Folder, Resource, Secret, check_disk_gb, check_instance_type, check_region,
                           parse_cidrs)

#: built-in defaults per cloud, used when neither the declaration nor the stack config says
DEFAULTS: dict[str, dict[str, Any]] = {
    "aws": {"region": "us-east-1", "scheduler_instance_type": "t3.medium", "worker_instance_type": "t3.large",
            "disk_gb": 50},
    "gcp": {"region": "us-central1", "scheduler_instance_type": "e2-standard-2",
            "worker_instance_type": "e2-standard-4", "disk_gb": 50},
}
#: seconds a worker keeps trying to reach a lost scheduler before it exits (and its machine shuts down)
DEFAULT_DEATH_TIMEOUT_S = 300.0


class StackConfig:
    """Typed reads of the ``rh_iac`` stack config, each failing with the key and ``Pulumi.<stack>.yaml`` named.

    ``get(key)`` returns the raw value (a string; structured YAML values arrive as JSON text, as Pulumi stores them)
    or None when unset.
    """

    def __init__(self, get: Callable[[str], str | None], stack: str, namespace: str = "rh_iac") -> None:
        self._get, self.stack, self.namespace = get, stack, namespace
        self.file = f"Pulumi.{stack}.yaml"

    def where(self, key: str) -> str:
        return f"{self.namespace}:{key} in {self.file}"

    def _fail(self, key: str, problem: str) -> StackConfigError:
        return StackConfigError(f"{self.where(key)}: {problem}; fix it with `pulumi config set {self.namespace}:{key} "
                                f"...` or edit the file.")

    def raw(self, key: str) -> str | None:
        value = self._get(key)
        return None if value is None or value == "" else value

    def text(self, key: str, check: Callable[[object], str] | None = None) -> str | None:
        value = self.raw(key)
        if value is None or check is None:
            return value
        try:
            return check(value)
        except DeclarationError as exc:
            raise self._fail(key, str(exc)) from None

    def flag(self, key: str) -> bool | None:
        value = self.raw(key)
        if value is None:
            return None
        if value.strip().lower() in ("true", "yes", "1"):
            return True
        if value.strip().lower() in ("false", "no", "0"):
            return False
        raise self._fail(key, f"{value!r} is not true or false")

    def integer(self, key: str, minimum: int = 0, check: Callable[[object], int] | None = None) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise self._fail(key, f"{value!r} is not a whole number") from None
        if number < minimum:
            raise self._fail(key, f"{number} is below the minimum {minimum}")
        if check is not None:
            try:
                return check(number)
            except DeclarationError as exc:
                raise self._fail(key, str(exc)) from None
        return number

    def strings(self, key: str) -> list[str] | None:
        """A list: YAML/JSON list text, or comma-separated text."""
        value = self.raw(key)
        if value is None:
            return None
        if value.lstrip().startswith("["):
            try:
                items = json.loads(value)
            except ValueError:
                raise self._fail(key, f"{value!r} is not a list") from None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise self._fail(key, f"{value!r} is not a list of strings")
            return items
        return [part.strip() for part in value.split(",") if part.strip()]

    def cidrs(self, key: str, allow_public: bool) -> list[str] | None:
        items = self.strings(key)
        if items is None:
            return None
        try:
            return parse_cidrs(items, allow_public=allow_public)
        except DeclarationError as exc:
            raise self._fail(key, str(exc)) from None


@dataclass(frozen=True)
class ClusterSettings:
    """What a cloud cluster is made of, after declaration > stack config > defaults."""

    cloud: str
    region: str
    scheduler_instance_type: str
    worker_instance_type: str
    workers: int
    #: workers are spot / preemptible (never the scheduler)
    spot: bool
    allowed_cidrs: tuple[str, ...]
    ssh_cidrs: tuple[str, ...]
    disk_gb: int
    #: an AMI id / GCP image; None: the rendering picks its default image
    image: str | None
    #: nodes get a public address; the cluster's address is then the scheduler's public IP
    public_ip: bool
    #: the scheduler stops itself after this long without work (None: never)
    idle_timeout_s: float | None
    death_timeout_s: float
    threads_per_worker: int
    memory_limit: str


def stack_region(cloud: str, config: StackConfig, cloud_get: Callable[[str], str | None],
                 declared: str | None = None) -> str:
    """The stack's region: the declaration's (``Stack(region=...)``, or its group's default), else rh_iac:region,
    else <cloud>:region (the provider's own config), else the default."""
    if declared is not None:
        return check_region(declared)
    region = config.text("region", check_region)
    if region is None:
        region = StackConfig(cloud_get, config.stack, namespace=cloud).text("region", check_region)
    return region or DEFAULTS[cloud]["region"]


def cluster_settings(cluster: Cluster, config: StackConfig, region: str) -> ClusterSettings:
    """The effective settings of ``cluster`` (declared on ``config``'s stack, whose region is ``region``).

    Raises :class:`StackConfigError` for an invalid config value, or when no CIDR allowlist is given anywhere: an
    explicit ``[]`` (internal only) is fine, silence is not.
    """
    cloud = cluster.provider
    defaults = DEFAULTS[cloud]
    # every config value is read (and so checked) even when the declaration overrides it: a typo never waits
    allow_public = cluster.allow_public or bool(config.flag("allowPublic"))
    configured = {
        "allowed_cidrs": config.cidrs("allowedCidrs", allow_public),
        "ssh_cidrs": config.cidrs("sshCidrs", allow_public),
        "spot": config.flag("spot"), "spot_fallback": config.flag("spotFallback"), "workers": config.integer("workers"),
        "scheduler_instance_type": config.text("schedulerInstanceType", check_instance_type),
        "worker_instance_type": config.text("workerInstanceType", check_instance_type),
        "disk_gb": config.integer("diskGb", 0, check_disk_gb), "image": config.text("image"),
        "public_ip": config.flag("publicIp"), "death_timeout_s": config.integer("workerDeathTimeout", 10),
    }
    allowed = cluster.allowed_cidrs if cluster.allowed_cidrs is not None else configured["allowed_cidrs"]
    if allowed is None:
        raise StackConfigError(
            f"{cluster.label} on {cloud}: no CIDR allowlist for its scheduler (8786) and dashboard (8787): set "
            f"{config.where('allowedCidrs')} (e.g. [\"203.0.113.0/24\"]) or declare allowed_cidrs=[...]; "
            f"allowed_cidrs=[] opens nothing outside the cluster's network."
        )
    ssh = cluster.ssh_cidrs if cluster.ssh_cidrs is not None else configured["ssh_cidrs"]
    spot = cluster.spot if cluster.spot is not None else bool(configured["spot"])
    if spot and configured["spot_fallback"]:
        spot = False  # documented fallback: no spot capacity, the same workers on-demand
    workers = cluster.workers if cluster.workers_declared or configured["workers"] is None else configured["workers"]
    return ClusterSettings(
        cloud=cloud,
        region=cluster.region or region,
        scheduler_instance_type=(cluster.scheduler_instance_type or configured["scheduler_instance_type"]
                                 or defaults["scheduler_instance_type"]),
        worker_instance_type=(cluster.instance_type or configured["worker_instance_type"]
                              or defaults["worker_instance_type"]),
        workers=workers,
        spot=spot,
        allowed_cidrs=tuple(allowed),
        ssh_cidrs=tuple(ssh or ()),
        disk_gb=cluster.disk_gb or configured["disk_gb"] or defaults["disk_gb"],
        image=cluster.image or configured["image"],
        public_ip=True if configured["public_ip"] is None else configured["public_ip"],
        idle_timeout_s=None if cluster.autostop_mins == -1 else float(cluster.autostop_mins) * 60,
        death_timeout_s=float(configured["death_timeout_s"] or DEFAULT_DEATH_TIMEOUT_S),
        threads_per_worker=cluster.threads_per_worker,
        memory_limit=cluster.memory_limit,
    )


def secret_value(secret: Secret, state_dir: Path) -> str:
    """The value a cloud Secret is created with, read at deploy time (never recorded anywhere but the cloud's secret
    store and, encrypted, Pulumi's state).

    store='vault': the value in Vault. Local store: ``$<from_env>`` when set (and then kept, encrypted, in the
    stack's local store so the next deploy without the variable keeps it), else the kept value, else a generated one
    when ``generate=True``; otherwise :class:`SecretError` naming the variable.
    """
    if secret.store == "vault":
        return secret.value()
    from rh_iac.secrets.local import LocalSecretStore, generate_token

    store = LocalSecretStore(Path(state_dir) / "secrets")
    incoming = os.environ.get(secret.from_env) if secret.from_env else None
    if incoming:
        if not store.exists(secret.name) or store.get(secret.name) != incoming:
            store.put(secret.name, incoming)
        return incoming
    if store.exists(secret.name):
        return store.get(secret.name)
    if not secret.generate:
        raise SecretError(
            f"{secret.label}: environment variable {secret.from_env} is not set and no value is kept yet; export it "
            f"before deploying, or declare the secret with generate=True."
        )
    value = generate_token()
    store.put(secret.name, value)
    return value


# --- shared by the cloud renderings ----------------------------------------------------------------------------------
def remote_folder(folder: Folder) -> bool:
    """A folder declared on existing storage (``s3://bucket/prefix``, ``gs://...``): used, not provisioned."""
    return bool(folder.path) and "://" in folder.path


def folder_prefix(folder: Folder) -> str:
    """The key prefix of a provisioned folder inside its bucket: its declared path, else its name."""
    return (folder.path or folder.name).strip("/") or folder.name


def data_url(resource: Resource) -> str | None:
    """The URL of a Table or Blob whose folder is on existing remote storage (nothing to provision), else None."""
    folder = getattr(resource, "folder", None)
    if isinstance(folder, Folder) and remote_folder(folder):
        return folder.path.rstrip("/") + "/" + resource.name
    return None


#: per resource kind, the output keys a cloud provider records in RNS (the same names the local provider records)
OUTPUTS: dict[str, tuple[str, ...]] = {
    "cluster": ("scheduler_address", "dashboard_url", "tls", "status_url"),
    "folder": ("url",),
    "table": ("url",),
    "blob": ("url",),
    "secret": ("ref",),
}
SCHEDULER_PORT, DASHBOARD_PORT, SSH_PORT = 8786, 8787, 22

#: the TLS material a node fetches at boot, per role: secret_refs key -> ClusterTLS field
TLS_REFS = {"scheduler": {"tls_ca": "ca_file", "tls_cert": "scheduler_cert", "tls_key": "scheduler_key"},
            "worker": {"tls_ca": "ca_file", "tls_cert": "worker_cert", "tls_key": "worker_key"}}


def cluster_tls(state_dir: Path, stack: str, cluster: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(paths, pems)``: the cluster's certificates, issued (or reused) by the stack CA under ``state_dir``.

    ``paths`` is the :class:`~rh_iac.tls.ClusterTLS` dict recorded as the cluster's ``tls`` output (the client's
    certificate and key stay here); ``pems`` maps each ClusterTLS field the nodes need to its PEM text, for the
    cloud's secret store. Distributed does not check host names, so the certificates need not name the nodes' IPs.
    """
    from rh_iac.tls import issue_cluster_tls

    tls = issue_cluster_tls(Path(state_dir), stack, cluster).to_dict()
    fields = {field for refs in TLS_REFS.values() for field in refs.values()}
    return tls, {field: Path(tls[field]).read_text() for field in sorted(fields)}


def env_var_for(secret_name: str) -> str:
    """The environment variable a delivered secret is set as on the workers (as ``Secret.to`` names it)."""
    return secret_name.upper().replace("-", "_")


def rh_iac_source(state_dir: Path) -> Path | None:
    """This client's rh_iac as a source archive (under ``state_dir/dist``) for the nodes to install, so they run
    exactly its code; None when rh_iac is installed from a published release (the nodes then pip install that)."""
    from rh_iac.errors import NodeConfigError
    from runtime.bootstrap import source_archive

    try:
        return source_archive(Path(state_dir) / "dist")
    except NodeConfigError:
        return None


def node_user_data(cloud: str, role: str, stack: str, cluster: Cluster, settings: ClusterSettings,
                   secret_refs: dict[str, str], status_url: str, scheduler_address: str | None = None,
                   rh_iac_requirement: str | None = None) -> str:
    """The node's cloud-init text (:func:`runtime.bootstrap.user_data`): references to secrets, never their values.
    ``rh_iac_requirement``: the URL of :func:`rh_iac_source` uploaded to the cluster's bucket (default: the index)."""
    from runtime.bootstrap import NodeConfig, user_data

    env = cluster.env
    source = {"rh_iac_requirement": rh_iac_requirement} if rh_iac_requirement else {}
    return user_data(NodeConfig(**source,
        cloud=cloud, role=role, stack=stack, cluster=cluster.name, region=settings.region,
        secret_refs=dict(secret_refs), status_url=status_url,
        packages=tuple(env.packages) if env else (), env_vars=dict(env.env_vars) if env else {},
        setup=tuple(env.setup) if env else (), scheduler_address=scheduler_address,
        threads_per_worker=settings.threads_per_worker, memory_limit=settings.memory_limit,
        idle_timeout_s=settings.idle_timeout_s, death_timeout_s=settings.death_timeout_s,
    ))
