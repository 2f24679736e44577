"""A stack's Google Cloud resources as Pulumi ComponentResources: ``rh:gcp:DaskCluster``, ``rh:gcp:Bucket``,
``rh:gcp:Secret``.

:func:`render` is called inside a Pulumi program (the real CLI, or Pulumi's mocks in the tests) and returns, per
declared resource, the outputs RNS records (:data:`OUTPUTS`). What each component builds:

- **DaskCluster**: firewall rules on the network (``rh_iac:network``, default ``default``) that let the configured
  CIDRs reach the scheduler's 8786 and 8787 only (22 only when ``ssh_cidrs`` are given; IPv4 and IPv6 ranges in
  separate rules, as GCP requires) and let the cluster's nodes reach each other on every port; a status bucket for
  readiness markers and bootstrap logs; the TLS material in Secret Manager (the nodes fetch it at boot: the startup
  script holds only resource names); per role a service account allowed exactly its own secrets
  (``roles/secretmanager.secretAccessor`` on each), the status prefix, and for workers the stack's folder prefixes
  (``roles/storage.objectAdmin`` with an IAM condition on the prefix, which also admits the bucket itself so the
  prefix can be listed) and secrets; a standard-provisioned scheduler (never preemptible) and ``workers`` workers,
  SPOT when asked (``rh_iac:spotFallback: true`` makes them standard when spot capacity is short). Every instance is
  a Shielded VM (secure boot, vTPM, integrity monitoring) with OS Login and project SSH keys blocked; a node that
  powers itself off (idle timeout, worker death timeout) stops billing for its machine (spot workers are deleted).
- **Bucket**: a GCS bucket with uniform bucket-level access, versioning and public access prevention enforced.
- **Secret**: a Secret Manager secret and its version, the value wrapped in ``pulumi.Output.secret``.

Everything labelable carries the labels ``rh_iac-stack``, ``rh_iac-resource`` and ``rh_iac-created-by`` (values
sanitized to GCP's label rules), so orphans can be listed with one label filter. Not rendered: an Env, a Folder on an
existing ``gs://``/``s3://`` URL (its URL is returned), and the Tables and Blobs of any folder (their URL is the
folder's + ``/<name>``). Resources of another provider are left to that provider.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pulumi
import pulumi_gcp as gcp

from rh_iac.model import Blob, Cluster, Folder, Secret as SecretDecl, Stack, Table
from rh_iac.providers.cloud_settings import (
    DASHBOARD_PORT,
    OUTPUTS,
    SCHEDULER_PORT,
    SSH_PORT,
    TLS_REFS,
    ClusterSettings,
    StackConfig,
    cluster_settings,
    cluster_tls,
    data_url,
    env_var_for,
    folder_prefix,
    node_user_data,
    rh_iac_source,
    remote_folder,
    secret_value,
    stack_region,
)

_UBUNTU_IMAGE = "ubuntu-os-cloud/ubuntu-2404-lts-{arch}"
_ARM_RE = re.compile(r"^(t2a|c4a|n4a)-")  # Ampere / Axion machine families: arm64 images
_LABEL_RE = re.compile(r"[^a-z0-9_-]")


def label_value(value: str) -> str:
    """``value`` under GCP's label rules: lowercase letters, digits, ``_`` and ``-``, at most 63 characters."""
    return _LABEL_RE.sub("_", value.lower())[:63]


def labels(stack: str, resource: str, **extra: str) -> dict[str, str]:
    """The labels every labelable GCP resource of ``resource`` gets."""
    values = {"rh_iac-stack": stack, "rh_iac-resource": resource, "rh_iac-created-by": "rh_iac", **extra}
    return {key: label_value(value) for key, value in values.items()}


def network_tag(*parts: str) -> str:
    """A network tag (firewall target): lowercase letters, digits and ``-``, starting with a letter, <= 63 chars."""
    tag = re.sub(r"[^a-z0-9-]", "-", "-".join(("rh",) + parts).lower())
    return tag[:63].rstrip("-")


def account_id(stack: str, cluster: str, role: str) -> str:
    """A service account id (6-30 chars, ``[a-z][-a-z0-9]*[a-z0-9]``) unique per stack, cluster and role."""
    digest = hashlib.sha256(f"{stack}/{cluster}/{role}".encode()).hexdigest()[:6]
    head = re.sub(r"[^a-z0-9-]", "-", cluster.lower())[:17].strip("-") or "rh"  # 17 + 1 + 5 + 1 + 6 = 30
    return f"{head}-{role[:5]}-{digest}"


def prefix_condition(bucket: str, prefix: str) -> str:
    """The IAM condition admitting objects under ``prefix`` of ``bucket`` (and the bucket itself, for listing)."""
    return (f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/{prefix}/") || '
            f'resource.name == "projects/_/buckets/{bucket}"')


class Bucket(pulumi.ComponentResource):
    """A GCS bucket: uniform bucket-level access, versioning, public access prevention enforced.

    ``bucket_name`` is its output.
    """

    def __init__(self, name: str, *, location: str, labels: dict[str, str], force_destroy: bool = False,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rh:gcp:Bucket", name, None, opts)
        bucket = gcp.storage.Bucket(name, location=location.upper(), uniform_bucket_level_access=True,
                                    public_access_prevention="enforced", versioning={"enabled": True},
                                    force_destroy=force_destroy, labels=labels,
                                    opts=pulumi.ResourceOptions(parent=self))
        self.bucket_name: pulumi.Output[str] = bucket.name
        self.register_outputs({"bucket": bucket.name})


class Secret(pulumi.ComponentResource):
    """A Secret Manager secret holding ``value`` (a Pulumi secret: encrypted in state, masked in output).

    ``ref`` is its resource name (``projects/<project>/secrets/<id>``): what nodes are given to fetch it with.
    """

    def __init__(self, name: str, *, secret_id: str, value: str, labels: dict[str, str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rh:gcp:Secret", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        secret = gcp.secretmanager.Secret(name, secret_id=secret_id, replication={"auto": {}}, labels=labels,
                                          opts=child)
        gcp.secretmanager.SecretVersion(f"{name}-value", secret=secret.id,
                                        secret_data=pulumi.Output.secret(value), opts=child)
        self.id: pulumi.Output[str] = secret.id
        self.ref: pulumi.Output[str] = secret.name
        self.register_outputs({"ref": secret.name})


class DaskCluster(pulumi.ComponentResource):
    """A TLS-only Dask cluster on Compute Engine: firewall, service accounts, TLS secrets, status bucket, nodes.

    Outputs: ``scheduler_address`` (``tls://<ip>:8786``: the scheduler's external IP when it has one and CIDRs are
    allowed in, else its internal IP), ``dashboard_url``, ``status_url`` (``gs://<status bucket>/status/``).
    """

    def __init__(self, name: str, *, cluster: Cluster, settings: ClusterSettings, stack: str, config: StackConfig,
                 zone: str, state_dir: Path, folders: list[tuple[Bucket, str]], secrets: dict[str, Secret],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rh:gcp:DaskCluster", name, None, opts)
        self._child = pulumi.ResourceOptions(parent=self)
        self._labels = lambda **extra: labels(stack, name, **extra)
        network = config.text("network") or "default"
        subnetwork = config.text("subnetwork")
        node_tag = network_tag(stack, name)
        scheduler_tag = network_tag(stack, name, "scheduler")
        self._firewalls(name, network, node_tag, scheduler_tag, settings)

        status = Bucket(f"{name}-status", location=settings.region, labels=self._labels(), force_destroy=True,
                        opts=self._child)
        self.status_url = pulumi.Output.concat("gs://", status.bucket_name, "/status/")
        source, requirement = rh_iac_source(state_dir), None  # this client's rh_iac, for the nodes to install
        uploads = []
        if source is not None:
            uploads = [gcp.storage.BucketObject(f"{name}-rh-iac-source", bucket=status.bucket_name,
                                                name=f"dist/{source.name}", source=pulumi.FileAsset(str(source)),
                                                opts=self._child)]
            requirement = pulumi.Output.concat("gs://", uploads[0].bucket, "/", uploads[0].name)
        tls_paths, pems = cluster_tls(state_dir, stack, name)
        tls_secrets = {field: Secret(f"{name}-{field.replace('_', '-')}",
                                     secret_id=f"{stack}-{name}-{field.replace('_', '-')}", value=pem,
                                     labels=self._labels(), opts=self._child)
                       for field, pem in pems.items()}

        accounts, refs, grants = {}, {}, {}
        for role in ("scheduler", "worker"):
            account = gcp.serviceaccount.Account(
                f"{name}-{role}", account_id=account_id(stack, name, role),
                display_name=f"rh_iac {stack}/{name} {role} nodes", opts=self._child)
            member = pulumi.Output.concat("serviceAccount:", account.email)
            granted = {field: tls_secrets[field] for field in TLS_REFS[role].values()}
            refs[role] = {key: tls_secrets[field].ref for key, field in TLS_REFS[role].items()}
            locations = [(status, "status")] + ([(status, "dist")] if source is not None else [])
            if role == "worker":
                granted.update({f"secret-{n}": s for n, s in secrets.items()})
                refs[role].update({f"secret:{env_var_for(n)}": s.ref for n, s in secrets.items()})
                locations += folders
            grants[role] = [
                gcp.secretmanager.SecretIamMember(f"{name}-{role}-{key.replace('_', '-')}", secret_id=secret.id,
                                                  role="roles/secretmanager.secretAccessor", member=member,
                                                  opts=self._child)
                for key, secret in granted.items()
            ] + [
                gcp.storage.BucketIAMMember(
                    f"{name}-{role}-{i}-objects", bucket=bucket.bucket_name, role="roles/storage.objectAdmin",
                    member=member,
                    condition={"title": f"rh_iac {prefix}/ prefix",
                               "description": f"objects under {prefix}/ only",
                               "expression": bucket.bucket_name.apply(lambda b, p=prefix: prefix_condition(b, p))},
                    opts=self._child)
                for i, (bucket, prefix) in enumerate(locations)
            ]
            accounts[role] = account

        def boot(role: str, scheduler_ip: pulumi.Input[str] | None = None) -> pulumi.Output[str]:
            keys = list(refs[role])
            return pulumi.Output.all(self.status_url, scheduler_ip, requirement, *refs[role].values()).apply(
                lambda v: node_user_data("gcp", role, stack, cluster, settings, dict(zip(keys, v[3:])), v[0],
                                         f"tls://{v[1]}:{SCHEDULER_PORT}" if v[1] else None, v[2]))

        def instance(node: str, role: str, machine_type: str, user_data: pulumi.Output[str],
                     scheduling: dict[str, Any], tags: list[str]) -> gcp.compute.Instance:
            interface: dict[str, Any] = {"network": network, "access_configs": [{}] if settings.public_ip else []}
            if subnetwork:
                interface["subnetwork"] = subnetwork
            return gcp.compute.Instance(
                f"{name}-{node}", machine_type=machine_type, zone=zone,
                boot_disk={"auto_delete": True, "initialize_params": {
                    "image": settings.image or _default_image(machine_type), "size": settings.disk_gb,
                    "type": "pd-balanced", "labels": self._labels(role=role)}},
                network_interfaces=[interface],
                service_account={"email": accounts[role].email, "scopes": ["cloud-platform"]},
                metadata={"startup-script": user_data, "enable-oslogin": "TRUE", "block-project-ssh-keys": "true"},
                shielded_instance_config={"enable_secure_boot": True, "enable_vtpm": True,
                                          "enable_integrity_monitoring": True},
                scheduling=scheduling, tags=tags, labels=self._labels(role=role), allow_stopping_for_update=True,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[  # what the node fetches at boot exists first
                    *grants[role], status, *tls_secrets.values(), *(secrets.values() if role == "worker" else ()),
                    *uploads]))

        standard = {"provisioning_model": "STANDARD", "preemptible": False, "automatic_restart": True,
                    "on_host_maintenance": "MIGRATE"}
        spot = {"provisioning_model": "SPOT", "preemptible": True, "automatic_restart": False,
                "on_host_maintenance": "TERMINATE", "instance_termination_action": "DELETE"}
        scheduler = instance("scheduler", "scheduler", settings.scheduler_instance_type, boot("scheduler"), standard,
                             [node_tag, scheduler_tag])
        internal_ip = scheduler.network_interfaces.apply(lambda nics: nics[0].network_ip)
        self.workers = [
            instance(f"worker-{i}", "worker", settings.worker_instance_type, boot("worker", internal_ip),
                     spot if settings.spot else standard, [node_tag])
            for i in range(settings.workers)
        ]
        if settings.public_ip and settings.allowed_cidrs:
            host = scheduler.network_interfaces.apply(lambda nics: nics[0].access_configs[0].nat_ip)
        else:
            host = internal_ip
        self.scheduler = scheduler
        self.scheduler_address = pulumi.Output.concat("tls://", host, f":{SCHEDULER_PORT}")
        self.dashboard_url = pulumi.Output.concat("http://", host, f":{DASHBOARD_PORT}/status")
        self.tls = tls_paths
        self.register_outputs({"scheduler_address": self.scheduler_address, "dashboard_url": self.dashboard_url,
                               "status_url": self.status_url})

    def _firewalls(self, name: str, network: str, node_tag: str, scheduler_tag: str,
                   settings: ClusterSettings) -> None:
        def rules(rule: str, cidrs: tuple[str, ...], ports: list[str], targets: list[str], what: str) -> None:
            for family, ranges in (("v4", [c for c in cidrs if ":" not in c]), ("v6", [c for c in cidrs if ":" in c])):
                if ranges:  # GCP does not mix IPv4 and IPv6 ranges in one rule
                    gcp.compute.Firewall(f"{name}-{rule}-{family}", network=network, direction="INGRESS",
                                         description=what, source_ranges=ranges, target_tags=targets,
                                         allows=[{"protocol": "tcp", "ports": ports}], opts=self._child)

        rules("dask", settings.allowed_cidrs, [str(SCHEDULER_PORT), str(DASHBOARD_PORT)], [scheduler_tag],
              "Dask scheduler (TLS) and dashboard from the allowed CIDRs")
        rules("ssh", settings.ssh_cidrs, [str(SSH_PORT)], [node_tag], "SSH from the ssh CIDRs")
        gcp.compute.Firewall(f"{name}-internal", network=network, direction="INGRESS",
                             description="scheduler <-> workers: every port, between the cluster's nodes only",
                             source_tags=[node_tag], target_tags=[node_tag],
                             allows=[{"protocol": "tcp"}, {"protocol": "udp"}, {"protocol": "icmp"}],
                             opts=self._child)


def _default_image(machine_type: str) -> str:
    return _UBUNTU_IMAGE.format(arch="arm64" if _ARM_RE.match(machine_type) else "amd64")


def render(stack: Stack, state_dir: Path) -> dict[str, dict[str, Any]]:
    """Create the stack's GCP components; returns ``{resource name: {output key: Output or value}}`` (keys from
    :data:`OUTPUTS`). Only resources of provider ``gcp`` are rendered; what has nothing to create gets its declared
    URL (a Folder on existing storage, Tables and Blobs) and an Env is omitted. Invalid stack config raises
    :class:`~rh_iac.errors.StackConfigError` before any resource is registered.

    The zone is ``rh_iac:zone``, else ``gcp:zone``, else ``<region>-a`` (a cluster declared in another region than
    the stack's uses ``<its region>-a``).
    """
    config = StackConfig(pulumi.Config("rh_iac").get, pulumi.get_stack())
    gcp_config = StackConfig(pulumi.Config("gcp").get, pulumi.get_stack(), namespace="gcp")
    region = stack_region("gcp", config, pulumi.Config("gcp").get, stack.region)
    ours = [r for r in stack if r.provider == "gcp"]
    settings = {c.name: cluster_settings(c, config, region) for c in ours if isinstance(c, Cluster)}
    configured_zone = config.text("zone") or gcp_config.text("zone")
    values = {s.name: secret_value(s, state_dir) for s in ours if isinstance(s, SecretDecl)}
    outputs: dict[str, dict[str, Any]] = {}
    buckets: list[tuple[Bucket, str]] = []
    secrets: dict[str, Secret] = {}
    for resource in ours:
        if isinstance(resource, Folder):
            if remote_folder(resource):
                outputs[resource.name] = {"url": resource.path}
                continue
            bucket = Bucket(resource.name, location=region,
                            labels=labels(stack.name, resource.name))
            prefix = folder_prefix(resource)
            buckets.append((bucket, prefix))
            outputs[resource.name] = {"url": pulumi.Output.concat("gs://", bucket.bucket_name, f"/{prefix}")}
        elif isinstance(resource, SecretDecl):
            secrets[resource.name] = Secret(resource.name, secret_id=f"{stack.name}-{resource.name}",
                                            value=values[resource.name], labels=labels(stack.name, resource.name))
            outputs[resource.name] = {"ref": secrets[resource.name].ref}
    for resource in ours:
        if isinstance(resource, (Table, Blob)):
            outputs[resource.name] = {"url": data_url(resource) or pulumi.Output.from_input(
                outputs[resource.folder.name]["url"]).apply(lambda url, n=resource.name: f"{url}/{n}")}
        elif isinstance(resource, Cluster):
            cluster_settings_ = settings[resource.name]
            zone = (configured_zone if configured_zone and configured_zone.startswith(cluster_settings_.region + "-")
                    else f"{cluster_settings_.region}-a")
            cluster = DaskCluster(resource.name, cluster=resource, settings=cluster_settings_, stack=stack.name,
                                  config=config, zone=zone, state_dir=state_dir, folders=buckets, secrets=secrets)
            outputs[resource.name] = {"scheduler_address": cluster.scheduler_address,
                                      "dashboard_url": cluster.dashboard_url, "tls": cluster.tls,
                                      "status_url": cluster.status_url}
    return outputs


__all__ = ["OUTPUTS", "Bucket", "DaskCluster", "Secret", "labels", "prefix_condition", "render"]
