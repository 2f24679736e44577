"""A stack's AWS resources as Pulumi ComponentResources: ``rh:aws:DaskCluster``, ``rh:aws:Bucket``, ``rh:aws:Secret``.

:func:`render` is called inside a Pulumi program (the real CLI, or Pulumi's mocks in the tests) and returns, per
declared resource, the outputs RNS records (:data:`OUTPUTS`). What each component builds:

- **DaskCluster**: its network (``rh_iac:vpcId``/``rh_iac:subnetId``; else ``rh_iac:createVpc: true`` makes a VPC,
  public subnet, internet gateway and route table; else the account's default VPC), a security group whose ingress
  is 8786 (scheduler) and 8787 (dashboard) from the configured CIDRs only, 22 only when ``ssh_cidrs`` are given, and
  every port between members of the group; a status bucket for the nodes' readiness markers and bootstrap logs; the
  cluster's TLS material in Secrets Manager (CA certificate, scheduler and worker certificates and keys: the nodes
  fetch them at boot, user-data carries only their ARNs); per role (scheduler, workers) an IAM role and instance
  profile allowed exactly its own secrets, the status prefix, and for workers the stack's folder prefixes and
  secrets; an on-demand scheduler and ``workers`` worker instances (spot when asked; ``rh_iac:spotFallback: true``
  creates the same workers on-demand when spot capacity is short). Every instance requires IMDSv2, has an encrypted
  root volume, and terminates when it shuts itself down (idle timeout, worker death timeout), so it stops billing.
- **Bucket**: an S3 bucket with versioning, SSE-KMS (bucket key), every public-access block and
  BucketOwnerEnforced ownership.
- **Secret**: a Secrets Manager secret and its value, wrapped in ``pulumi.Output.secret`` (encrypted in state,
  masked in output).

Everything taggable carries ``rh_iac:stack``, ``rh_iac:resource``, ``rh_iac:created-by`` and a ``Name``, so orphans can
be listed with one tag query. Not rendered (nothing to create): an Env (its packages go to the nodes' user-data), a
Folder on an existing ``s3://``/``gs://`` URL (its declared URL is returned as its output), and the Tables and Blobs
of any folder (their URL is the folder's URL + ``/<name>``). Resources of another provider are left to that provider.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import pulumi
import pulumi_aws as aws

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

#: Canonical's account, publisher of the Ubuntu AMIs used when no image is configured
UBUNTU_OWNER = "099720109477"
_UBUNTU_AMI = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-{arch}-server-*"
_GRAVITON_RE = re.compile(r"^[a-z]+[0-9]+[a-z]*g[a-z]*\.")  # t4g.medium, m7g.large, c6gn.xlarge: arm64
_OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]


def tags(stack: str, resource: str, name: str, **extra: str) -> dict[str, str]:
    """The tags every taggable AWS resource of ``resource`` gets (``Name`` is the child's own name)."""
    return {"rh_iac:stack": stack, "rh_iac:resource": resource, "rh_iac:created-by": "rh_iac", "Name": name, **extra}


class Bucket(pulumi.ComponentResource):
    """An S3 bucket: versioned, encrypted with SSE-KMS, all public access blocked, ACLs disabled (owner enforced).

    ``bucket_name`` and ``arn`` are its outputs.
    """

    def __init__(self, name: str, *, tags: dict[str, str], force_destroy: bool = False,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rh:aws:Bucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(name, force_destroy=force_destroy, tags=tags, opts=child)
        aws.s3.BucketVersioning(f"{name}-versioning", bucket=bucket.id,
                                versioning_configuration={"status": "Enabled"}, opts=child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-sse", bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"},
                    "bucket_key_enabled": True}],
            opts=child)
        aws.s3.BucketPublicAccessBlock(f"{name}-public-access", bucket=bucket.id, block_public_acls=True,
                                       block_public_policy=True, ignore_public_acls=True,
                                       restrict_public_buckets=True, opts=child)
        aws.s3.BucketOwnershipControls(f"{name}-ownership", bucket=bucket.id,
                                       rule={"object_ownership": "BucketOwnerEnforced"}, opts=child)
        self.bucket_name: pulumi.Output[str] = bucket.bucket
        self.arn: pulumi.Output[str] = bucket.arn
        self.register_outputs({"bucket": bucket.bucket, "arn": bucket.arn})


class Secret(pulumi.ComponentResource):
    """A Secrets Manager secret holding ``value`` (a Pulumi secret: encrypted in state, masked in output).

    ``arn`` is its output: what nodes are given to fetch it with their instance role.
    """

    def __init__(self, name: str, *, value: str, description: str, tags: dict[str, str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rh:aws:Secret", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        secret = aws.secretsmanager.Secret(name, description=description, recovery_window_in_days=7, tags=tags,
                                           opts=child)
        aws.secretsmanager.SecretVersion(f"{name}-value", secret_id=secret.id,
                                         secret_string=pulumi.Output.secret(value), opts=child)
        self.arn: pulumi.Output[str] = secret.arn
        self.register_outputs({"arn": secret.arn})


def _ami_filter(instance_type: str) -> str:
    return _UBUNTU_AMI.format(arch="arm64" if _GRAVITON_RE.match(instance_type) else "amd64")


def _policy(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def prefix_statements(bucket_arn: str, prefix: str) -> list[dict[str, Any]]:
    """Least-privilege S3 statements: list ``prefix`` of the bucket, read/write/delete its objects, nothing else."""
    return [
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn,
         "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}},
        {"Effect": "Allow", "Action": _OBJECT_ACTIONS, "Resource": f"{bucket_arn}/{prefix}/*"},
    ]


class _NodeRole(NamedTuple):
    """What one role's nodes run as: their instance profile, its policy, and the secrets they fetch at boot."""

    profile: aws.iam.InstanceProfile
    policy: aws.iam.RolePolicy
    refs: dict[str, pulumi.Output[str]]


class DaskCluster(pulumi.ComponentResource):
    """A TLS-only Dask cluster on EC2: network, security group, IAM, TLS secrets, status bucket, scheduler, workers.

    Outputs: ``scheduler_address`` (``tls://<ip>:8786``: the scheduler's public IP when it has one and CIDRs are
    allowed in, else its private IP), ``dashboard_url``, ``status_url`` (``s3://<status bucket>/status/``).
    """

    def __init__(self, name: str, *, cluster: Cluster, settings: ClusterSettings, stack: str, config: StackConfig,
                 state_dir: Path, folders: list[tuple[Bucket, str]], secrets: dict[str, Secret],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("rh:aws:DaskCluster", name, None, opts)
        self._child = pulumi.ResourceOptions(parent=self)
        self._tags = lambda child, **extra: tags(stack, name, child, **extra)
        self._amis: dict[str, pulumi.Output[str]] = {}
        vpc_id, subnet_id = self._network(name, config, settings)
        group = self._security_group(name, vpc_id, settings)

        status = Bucket(f"{name}-status", tags=self._tags(f"{name}-status"), force_destroy=True, opts=self._child)
        self.status_url = pulumi.Output.concat("s3://", status.bucket_name, "/status/")
        source, requirement = rh_iac_source(state_dir), None  # this client's rh_iac, for the nodes to install
        if source is not None:
            source_object = aws.s3.BucketObjectv2(
                f"{name}-rh-iac-source", bucket=status.bucket_name, key=f"dist/{source.name}",
                source=pulumi.FileAsset(str(source)), tags=self._tags(f"{name}-rh-iac-source"), opts=self._child)
            requirement = pulumi.Output.concat("s3://", source_object.bucket, "/", source_object.key)
        tls_paths, pems = cluster_tls(state_dir, stack, name)
        tls_secrets = {field: Secret(f"{name}-{field.replace('_', '-')}", value=pem,
                                     description=f"rh_iac {stack}/{name}: {field.replace('_', ' ')}",
                                     tags=self._tags(f"{name}-{field}"), opts=self._child)
                       for field, pem in pems.items()}
        user_secrets = {f"secret:{env_var_for(secret_name)}": secret.arn for secret_name, secret in secrets.items()}

        roles: dict[str, _NodeRole] = {}
        for role in ("scheduler", "worker"):
            refs = {key: tls_secrets[field].arn for key, field in TLS_REFS[role].items()}
            if role == "worker":
                refs.update(user_secrets)
            locations = ([(status.arn, "status")] + ([(status.arn, "dist")] if source is not None else [])
                         + ([(b.arn, prefix) for b, prefix in folders] if role == "worker" else []))
            profile, policy = self._role(name, role, refs, locations)
            roles[role] = _NodeRole(profile, policy, refs)

        def boot(role: str, scheduler_ip: pulumi.Input[str] | None = None) -> pulumi.Output[str]:
            refs = roles[role].refs
            keys = list(refs)
            return pulumi.Output.all(self.status_url, scheduler_ip, requirement, *refs.values()).apply(
                lambda v: node_user_data("aws", role, stack, cluster, settings, dict(zip(keys, v[3:])), v[0],
                                         f"tls://{v[1]}:{SCHEDULER_PORT}" if v[1] else None, v[2]))

        common = dict(subnet_id=subnet_id, vpc_security_group_ids=[group.id],
                      associate_public_ip_address=settings.public_ip, instance_initiated_shutdown_behavior="terminate",
                      metadata_options={"http_tokens": "required", "http_endpoint": "enabled",
                                        "http_put_response_hop_limit": 1},
                      user_data_replace_on_change=True)

        def boot_after(role: str) -> pulumi.ResourceOptions:
            """A node boots once what it fetches exists: its policy, its secrets' values, the status bucket."""
            needed = [roles[role].policy, status, *tls_secrets.values(), *(secrets.values() if role == "worker" else ()),
                      *([source_object] if source is not None else [])]
            return pulumi.ResourceOptions(parent=self, depends_on=needed)

        scheduler = aws.ec2.Instance(
            f"{name}-scheduler", ami=self._ami(settings.scheduler_instance_type, settings),
            instance_type=settings.scheduler_instance_type, iam_instance_profile=roles["scheduler"].profile.name,
            user_data=boot("scheduler"), root_block_device=self._disk(name, "scheduler", settings),
            tags=self._tags(f"{name}-scheduler", **{"rh_iac:role": "scheduler"}), opts=boot_after("scheduler"),
            **common)
        worker_ami = self._ami(settings.worker_instance_type, settings)
        market = ({"market_type": "spot",
                   "spot_options": {"spot_instance_type": "one-time", "instance_interruption_behavior": "terminate"}}
                  if settings.spot else None)
        self.workers = [
            aws.ec2.Instance(
                f"{name}-worker-{i}", ami=worker_ami, instance_type=settings.worker_instance_type,
                iam_instance_profile=roles["worker"].profile.name, instance_market_options=market,
                user_data=boot("worker", scheduler.private_ip),
                root_block_device=self._disk(name, f"worker-{i}", settings),
                tags=self._tags(f"{name}-worker-{i}", **{"rh_iac:role": "worker"}), opts=boot_after("worker"),
                **common)
            for i in range(settings.workers)
        ]
        reachable = settings.public_ip and bool(settings.allowed_cidrs)
        host = scheduler.public_ip if reachable else scheduler.private_ip
        self.scheduler = scheduler
        self.scheduler_address = pulumi.Output.concat("tls://", host, f":{SCHEDULER_PORT}")
        self.dashboard_url = pulumi.Output.concat("http://", host, f":{DASHBOARD_PORT}/status")
        self.tls = tls_paths
        self.register_outputs({"scheduler_address": self.scheduler_address, "dashboard_url": self.dashboard_url,
                               "status_url": self.status_url})

    # --- pieces ---------------------------------------------------------------------------------------------------
    def _network(self, name: str, config: StackConfig, settings: ClusterSettings):
        vpc_id, subnet_id = config.text("vpcId"), config.text("subnetId")
        if config.flag("createVpc") and not vpc_id:
            vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block="10.42.0.0/16", enable_dns_hostnames=True,
                              enable_dns_support=True, tags=self._tags(f"{name}-vpc"), opts=self._child)
            subnet = aws.ec2.Subnet(f"{name}-subnet", vpc_id=vpc.id, cidr_block="10.42.0.0/20",
                                    map_public_ip_on_launch=settings.public_ip, tags=self._tags(f"{name}-subnet"),
                                    opts=self._child)
            gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=self._tags(f"{name}-igw"),
                                              opts=self._child)
            routes = aws.ec2.RouteTable(f"{name}-routes", vpc_id=vpc.id,
                                        routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
                                        tags=self._tags(f"{name}-routes"), opts=self._child)
            aws.ec2.RouteTableAssociation(f"{name}-routes-subnet", subnet_id=subnet.id, route_table_id=routes.id,
                                          opts=self._child)
            return vpc.id, subnet.id
        invoke = pulumi.InvokeOptions(parent=self)
        if not vpc_id:
            vpc_id = aws.ec2.get_vpc_output(default=True, opts=invoke).id
        if not subnet_id:
            subnets = aws.ec2.get_subnets_output(filters=[{"name": "vpc-id", "values": [vpc_id]}], opts=invoke)
            subnet_id = subnets.ids.apply(lambda ids: _first(ids, vpc_id, config))
        return vpc_id, subnet_id

    def _security_group(self, name: str, vpc_id: pulumi.Input[str], settings: ClusterSettings) -> aws.ec2.SecurityGroup:
        def from_cidrs(port: int, cidrs: tuple[str, ...], what: str) -> list[dict[str, Any]]:
            v4 = [c for c in cidrs if ":" not in c]
            v6 = [c for c in cidrs if ":" in c]
            return [{"protocol": "tcp", "from_port": port, "to_port": port, "description": what,
                     **({"cidr_blocks": v4} if v4 else {}), **({"ipv6_cidr_blocks": v6} if v6 else {})}] \
                if cidrs else []

        ingress = [
            *from_cidrs(SCHEDULER_PORT, settings.allowed_cidrs, "Dask scheduler (TLS) from the allowed CIDRs"),
            *from_cidrs(DASHBOARD_PORT, settings.allowed_cidrs, "Dask dashboard from the allowed CIDRs"),
            *from_cidrs(SSH_PORT, settings.ssh_cidrs, "SSH from the ssh CIDRs"),
            {"protocol": "-1", "from_port": 0, "to_port": 0, "self": True,
             "description": "scheduler <-> workers: every port, inside the group only"},
        ]
        return aws.ec2.SecurityGroup(
            f"{name}-sg", vpc_id=vpc_id, description=f"rh_iac Dask cluster {name}", ingress=ingress,
            egress=[{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"],
                     "ipv6_cidr_blocks": ["::/0"], "description": "package installs, object store, secrets"}],
            tags=self._tags(f"{name}-sg"), opts=self._child)

    def _role(self, name: str, role: str, refs: dict[str, pulumi.Output[str]],
              locations: list[tuple[pulumi.Output[str], str]]) -> tuple[aws.iam.InstanceProfile, aws.iam.RolePolicy]:
        iam_role = aws.iam.Role(
            f"{name}-{role}-role", description=f"rh_iac {name} {role} nodes",
            assume_role_policy=_policy([{"Effect": "Allow", "Action": "sts:AssumeRole",
                                         "Principal": {"Service": "ec2.amazonaws.com"}}]),
            tags=self._tags(f"{name}-{role}-role"), opts=self._child)
        arns = list(refs.values())
        bucket_arns = [arn for arn, _ in locations]
        prefixes = [prefix for _, prefix in locations]

        def document(values: list[str]) -> str:
            secret_arns, buckets = values[:len(arns)], values[len(arns):]
            statements = [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                           "Resource": sorted(set(secret_arns))}]
            for bucket_arn, prefix in zip(buckets, prefixes):
                statements += prefix_statements(bucket_arn, prefix)
            return _policy(statements)

        policy = aws.iam.RolePolicy(f"{name}-{role}-policy", role=iam_role.id,
                                    policy=pulumi.Output.all(*arns, *bucket_arns).apply(document), opts=self._child)
        profile = aws.iam.InstanceProfile(f"{name}-{role}-profile", role=iam_role.name,
                                          tags=self._tags(f"{name}-{role}-profile"), opts=self._child)
        return profile, policy

    def _ami(self, instance_type: str, settings: ClusterSettings) -> pulumi.Input[str]:
        """The configured image, else the latest Ubuntu 24.04 AMI for the instance type's architecture."""
        if settings.image:
            return settings.image
        pattern = _ami_filter(instance_type)
        if pattern not in self._amis:
            self._amis[pattern] = aws.ec2.get_ami_output(
                most_recent=True, owners=[UBUNTU_OWNER],
                filters=[{"name": "name", "values": [pattern]}, {"name": "virtualization-type", "values": ["hvm"]}],
                opts=pulumi.InvokeOptions(parent=self)).id
        return self._amis[pattern]

    def _disk(self, name: str, node: str, settings: ClusterSettings) -> dict[str, Any]:
        return {"encrypted": True, "volume_size": settings.disk_gb, "volume_type": "gp3",
                "delete_on_termination": True, "tags": self._tags(f"{name}-{node}-disk")}


def _first(ids: list[str], vpc_id: object, config: StackConfig) -> str:
    if not ids:
        from rh_iac.errors import DeployError

        raise DeployError(f"VPC {vpc_id} has no subnets to put the cluster in; set {config.where('subnetId')} or "
                          f"rh_iac:createVpc: true.")
    return sorted(ids)[0]


class _Regions:
    """An explicit ``aws.Provider`` for each region other than the one the aws provider is configured with."""

    def __init__(self, stack: str, configured: str | None) -> None:
        self.stack, self.configured, self._providers = stack, configured, {}

    def opts(self, region: str) -> pulumi.ResourceOptions | None:
        if region == self.configured:
            return None
        if region not in self._providers:
            self._providers[region] = aws.Provider(f"{self.stack}-{region}", region=region)
        return pulumi.ResourceOptions(providers=[self._providers[region]])


def render(stack: Stack, state_dir: Path) -> dict[str, dict[str, Any]]:
    """Create the stack's AWS components; returns ``{resource name: {output key: Output or value}}`` (keys from
    :data:`OUTPUTS`). Only resources of provider ``aws`` are rendered; what has nothing to create gets its declared
    URL (a Folder on existing storage, Tables and Blobs) and an Env is omitted. Invalid stack config raises
    :class:`~rh_iac.errors.StackConfigError` before any resource is registered."""
    config = StackConfig(pulumi.Config("rh_iac").get, pulumi.get_stack())
    region = stack_region("aws", config, pulumi.Config("aws").get, stack.region)
    ours = [r for r in stack if r.provider == "aws"]
    settings = {c.name: cluster_settings(c, config, region) for c in ours if isinstance(c, Cluster)}
    values = {s.name: secret_value(s, state_dir) for s in ours if isinstance(s, SecretDecl)}
    regions = _Regions(stack.name, pulumi.Config("aws").get("region"))
    outputs: dict[str, dict[str, Any]] = {}
    buckets: list[tuple[Bucket, str]] = []
    secrets: dict[str, Secret] = {}
    for resource in ours:
        if isinstance(resource, Folder):
            if remote_folder(resource):
                outputs[resource.name] = {"url": resource.path}
                continue
            bucket = Bucket(resource.name, tags=tags(stack.name, resource.name, resource.name),
                            opts=regions.opts(region))
            prefix = folder_prefix(resource)
            buckets.append((bucket, prefix))
            outputs[resource.name] = {"url": pulumi.Output.concat("s3://", bucket.bucket_name, f"/{prefix}")}
        elif isinstance(resource, SecretDecl):
            secrets[resource.name] = Secret(
                resource.name, value=values[resource.name],
                description=f"rh_iac {stack.name}/{resource.name} (env {env_var_for(resource.name)} on workers)",
                tags=tags(stack.name, resource.name, resource.name), opts=regions.opts(region))
            outputs[resource.name] = {"ref": secrets[resource.name].arn}
    for resource in ours:
        if isinstance(resource, (Table, Blob)):
            outputs[resource.name] = {"url": data_url(resource) or pulumi.Output.from_input(
                outputs[resource.folder.name]["url"]).apply(lambda url, n=resource.name: f"{url}/{n}")}
        elif isinstance(resource, Cluster):
            cluster = DaskCluster(resource.name, cluster=resource, settings=settings[resource.name], stack=stack.name,
                                  config=config, state_dir=state_dir, folders=buckets, secrets=secrets,
                                  opts=regions.opts(settings[resource.name].region))
            outputs[resource.name] = {"scheduler_address": cluster.scheduler_address,
                                      "dashboard_url": cluster.dashboard_url, "tls": cluster.tls,
                                      "status_url": cluster.status_url}
    return outputs


__all__ = ["OUTPUTS", "Bucket", "DaskCluster", "Secret", "prefix_statements", "render", "tags"]
