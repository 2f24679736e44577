"""The aws provider's Pulumi rendering, under Pulumi's own mocks: what it would create, and that it is locked down.

Every rendering runs inside ``@pulumi.runtime.test`` (tests/cloud_mocks.py), so an exception inside an ``apply``
fails the test instead of passing silently; assertions are made on what the mock engine was asked to register.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloud_mocks import RecordingMocks, Rendering, render_under_mocks, secret_input
from conftest import CANARY, REPO
from rh_iac import Cluster, Env, Folder, Secret, Stack, Table
from rh_iac.errors import PublicIngressError, SecretError, StackConfigError

aws_render = pytest.importorskip("rh_iac.providers.aws.pulumi")

ACCOUNT = "123456789012"
CONFIG = {"aws:region": "us-east-1", "rh_iac:allowedCidrs": ["203.0.113.0/24", "2001:db8::/32"]}
PACKAGES = [f"package-{i}>=1.{i}" for i in range(27)] + ["pandas>=2.2", "pyarrow>=15", "s3fs>=2024.1"]
SETUP = [f"echo step {i} >> /var/log/rh_iac-setup.log" for i in range(5)] + ["apt-get install -yq htop"]
#: resources AWS lets us tag (everything the rendering creates but the sub-resources of a bucket/secret/role)
TAGGABLE = {"aws:s3/bucket:Bucket", "aws:secretsmanager/secret:Secret", "aws:ec2/securityGroup:SecurityGroup",
            "aws:ec2/instance:Instance", "aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile",
            "aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/internetGateway:InternetGateway",
            "aws:ec2/routeTable:RouteTable", "aws:s3/bucketObjectv2:BucketObjectv2"}


def computed(args) -> dict:
    """What AWS would compute: bucket names and ARNs, secret ARNs, instance IPs, role names."""
    t, n = args.typ, args.name
    if t == "aws:s3/bucket:Bucket":
        return {"bucket": f"{n}-0f3a", "arn": f"arn:aws:s3:::{n}-0f3a"}
    if t == "aws:secretsmanager/secret:Secret":
        return {"arn": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{n}-AbCdEf"}
    if t == "aws:ec2/instance:Instance":
        return {"private_ip": "10.0.1.10" if n.endswith("scheduler") else "10.0.1.20", "public_ip": "198.51.100.10"}
    if t == "aws:iam/role:Role":
        return {"name": n, "arn": f"arn:aws:iam::{ACCOUNT}:role/{n}"}
    if t == "aws:iam/instanceProfile:InstanceProfile":
        return {"name": n}
    return {}


def invoke(args) -> dict:
    if args.token == "aws:ec2/getVpc:getVpc":
        return {"id": "vpc-0default", "cidrBlock": "172.31.0.0/16"}
    if args.token == "aws:ec2/getSubnets:getSubnets":
        return {"ids": ["subnet-0bbb", "subnet-0aaa"]}
    if args.token == "aws:ec2/getAmi:getAmi":
        return {"id": "ami-0123456789abcdef0"}
    return {}


def realistic_stack(**cluster_kwargs) -> Stack:
    with Stack("aws", provider="aws") as stack:
        env = Env("aws-env", packages=PACKAGES, env_vars={"MODE": "prod", "LOG_LEVEL": "info"}, setup=SETUP)
        Cluster("aws-cluster", env=env, workers=2, **cluster_kwargs)
        data = Folder("aws-data")
        Table("aws-flights", folder=data)
        Secret("aws-token", from_env="RH_IAC_TEST_TOKEN")
    return stack


def render(stack: Stack, tmp_path: Path, monkeypatch, config: dict | None = None) -> Rendering:
    monkeypatch.setenv("RH_IAC_TEST_TOKEN", CANARY)
    monkeypatch.setenv("RH_IAC_HOME", str(tmp_path / "home"))
    return render_under_mocks(aws_render.render, stack, tmp_path / "state", CONFIG if config is None else config,
                              RecordingMocks(computed, invoke), "aws-dev")


def ingress_rules(r: Rendering) -> list[dict]:
    return [rule for sg in r.of_type("aws:ec2/securityGroup:SecurityGroup") for rule in sg.inputs.get("ingress", [])]


def policy(r: Rendering, name: str) -> dict:
    return json.loads(r.one("aws:iam/rolePolicy:RolePolicy", name).inputs["policy"])


@pytest.fixture
def rendered(tmp_path, monkeypatch) -> Rendering:
    return render(realistic_stack(), tmp_path, monkeypatch)


def test_components_and_their_children(rendered):
    r = rendered
    children = {
        "rh:aws:Bucket": {"aws:s3/bucket:Bucket", "aws:s3/bucketVersioning:BucketVersioning",
                          "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                          "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                          "aws:s3/bucketOwnershipControls:BucketOwnershipControls"},
        "rh:aws:Secret": {"aws:secretsmanager/secret:Secret", "aws:secretsmanager/secretVersion:SecretVersion"},
        "rh:aws:DaskCluster": {"aws:ec2/securityGroup:SecurityGroup", "aws:ec2/instance:Instance",
                               "aws:iam/role:Role", "aws:iam/rolePolicy:RolePolicy",
                               "aws:iam/instanceProfile:InstanceProfile", "rh:aws:Bucket", "rh:aws:Secret",
                               "aws:s3/bucketObjectv2:BucketObjectv2"},
    }
    assert r.types() == set(children) | set().union(*children.values())
    for resource in r.resources:
        if resource.type.startswith("rh:aws:") and resource.parent_type == "pulumi:pulumi:Stack":
            continue  # the stack's own components: its folder's bucket, its secret, its cluster
        assert resource.parent_type in children and resource.type in children[resource.parent_type], resource
    top = {(x.type, x.name) for x in r.resources if x.parent_type == "pulumi:pulumi:Stack"}
    assert top == {("rh:aws:Bucket", "aws-data"), ("rh:aws:Secret", "aws-token"),
                   ("rh:aws:DaskCluster", "aws-cluster")}
    assert all(not x.custom for x in r.resources if x.type.startswith("rh:aws:"))  # components, not custom resources
    # the cluster's TLS material: five secrets (CA, scheduler and worker certificate and key), and its status bucket
    cluster_secrets = {x.name for x in r.of_type("rh:aws:Secret") if x.parent_type == "rh:aws:DaskCluster"}
    assert cluster_secrets == {f"aws-cluster-{f}" for f in ("ca-file", "scheduler-cert", "scheduler-key",
                                                            "worker-cert", "worker-key")}
    instances = sorted(x.name for x in r.of_type("aws:ec2/instance:Instance"))
    assert instances == ["aws-cluster-scheduler", "aws-cluster-worker-0", "aws-cluster-worker-1"]
    # the default VPC is looked up, and the subnet chosen from it deterministically
    assert [c.token for c in r.calls if "Vpc" in c.token or "Subnets" in c.token] == [
        "aws:ec2/getVpc:getVpc", "aws:ec2/getSubnets:getSubnets"]
    assert {x.inputs["subnetId"] for x in r.of_type("aws:ec2/instance:Instance")} == {"subnet-0aaa"}
    assert r.one("aws:ec2/securityGroup:SecurityGroup", "aws-cluster-sg").inputs["vpcId"] == "vpc-0default"


def test_ingress_is_limited_to_the_configured_cidrs(rendered):
    rules = ingress_rules(rendered)
    external = [rule for rule in rules if not rule.get("self")]
    assert sorted((rule["fromPort"], rule["toPort"]) for rule in external) == [(8786, 8786), (8787, 8787)]
    for rule in external:
        assert rule["cidrBlocks"] == ["203.0.113.0/24"] and rule["ipv6CidrBlocks"] == ["2001:db8::/32"]
    assert not any(rule["fromPort"] <= 22 <= rule["toPort"] for rule in external)  # no SSH unless asked
    everywhere = {"0.0.0.0/0", "::/0"}
    assert not any(everywhere & set(rule.get("cidrBlocks", []) + rule.get("ipv6CidrBlocks", [])) for rule in rules)
    # scheduler <-> workers: every port, but only between members of the group
    internal = [rule for rule in rules if rule.get("self")]
    assert internal == [{"protocol": "-1", "fromPort": 0, "toPort": 0, "self": True,
                         "description": internal[0]["description"]}]


def test_ssh_is_opened_only_to_ssh_cidrs(tmp_path, monkeypatch):
    r = render(realistic_stack(ssh_cidrs=["198.51.100.7/32"]), tmp_path, monkeypatch)
    ssh = [rule for rule in ingress_rules(r) if rule.get("fromPort") == 22]
    assert len(ssh) == 1 and ssh[0]["cidrBlocks"] == ["198.51.100.7/32"] and "ipv6CidrBlocks" not in ssh[0]


def test_allow_public_is_the_only_way_to_open_the_world(tmp_path, monkeypatch):
    with pytest.raises(PublicIngressError, match="allow_public=True"):
        realistic_stack(allowed_cidrs=["0.0.0.0/0"])
    r = render(realistic_stack(allowed_cidrs=["0.0.0.0/0"], allow_public=True), tmp_path, monkeypatch)
    assert any("0.0.0.0/0" in rule.get("cidrBlocks", []) for rule in ingress_rules(r))  # the check above can fail
    with pytest.raises(StackConfigError, match=r"rh_iac:allowedCidrs in Pulumi\.aws-dev\.yaml.*allow_public"):
        render(realistic_stack(), tmp_path, monkeypatch, {**CONFIG, "rh_iac:allowedCidrs": ["0.0.0.0/0"]})


def test_spot_only_on_workers_and_the_on_demand_fallback(tmp_path, monkeypatch, rendered):
    instances = {x.name: x.inputs for x in rendered.of_type("aws:ec2/instance:Instance")}
    assert not any("instanceMarketOptions" in i for i in instances.values())  # spot is off by default
    r = render(realistic_stack(spot=True), tmp_path, monkeypatch)
    instances = {x.name: x.inputs for x in r.of_type("aws:ec2/instance:Instance")}
    assert "instanceMarketOptions" not in instances["aws-cluster-scheduler"]
    for name in ("aws-cluster-worker-0", "aws-cluster-worker-1"):
        assert instances[name]["instanceMarketOptions"]["marketType"] == "spot"
        assert instances[name]["instanceMarketOptions"]["spotOptions"]["instanceInterruptionBehavior"] == "terminate"
    r = render(realistic_stack(), tmp_path, monkeypatch, {**CONFIG, "rh_iac:spot": "true"})
    assert sum("instanceMarketOptions" in x.inputs for x in r.of_type("aws:ec2/instance:Instance")) == 2
    r = render(realistic_stack(spot=True), tmp_path, monkeypatch, {**CONFIG, "rh_iac:spotFallback": "true"})
    assert not any("instanceMarketOptions" in x.inputs for x in r.of_type("aws:ec2/instance:Instance"))


def test_instances_require_imdsv2_encrypt_their_disk_and_terminate_on_shutdown(rendered):
    for instance in rendered.of_type("aws:ec2/instance:Instance"):
        i = instance.inputs
        assert i["metadataOptions"]["httpTokens"] == "required"
        assert i["rootBlockDevice"]["encrypted"] is True and i["rootBlockDevice"]["volumeSize"] == 50
        assert i["instanceInitiatedShutdownBehavior"] == "terminate"
        assert i["ami"] == "ami-0123456789abcdef0"
    types = {x.name: x.inputs["instanceType"] for x in rendered.of_type("aws:ec2/instance:Instance")}
    assert types == {"aws-cluster-scheduler": "t3.medium", "aws-cluster-worker-0": "t3.large",
                     "aws-cluster-worker-1": "t3.large"}


def test_buckets_are_versioned_encrypted_and_private(rendered):
    buckets = {x.name for x in rendered.of_type("aws:s3/bucket:Bucket")}
    assert buckets == {"aws-data", "aws-cluster-status"}
    for name in buckets:
        bucket_id = f"{name}-id"
        versioning = rendered.one("aws:s3/bucketVersioning:BucketVersioning", f"{name}-versioning").inputs
        assert versioning["bucket"] == bucket_id and versioning["versioningConfiguration"]["status"] == "Enabled"
        sse = rendered.one("aws:s3/bucketServerSideEncryptionConfiguration:"
                           "BucketServerSideEncryptionConfiguration", f"{name}-sse").inputs
        assert sse["bucket"] == bucket_id
        assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
        block = rendered.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", f"{name}-public-access").inputs
        assert block["bucket"] == bucket_id
        assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                              "restrictPublicBuckets"))
        owner = rendered.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls", f"{name}-ownership").inputs
        assert owner["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    assert rendered.one("aws:s3/bucket:Bucket", "aws-data").inputs.get("forceDestroy") is False  # data is kept


def _actions(statement: dict) -> list[str]:
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def _statements(doc: dict, action: str) -> list[dict]:
    return [s for s in doc["Statement"] if action in _actions(s)]


def test_iam_policies_are_scoped_to_the_stack_bucket_prefixes_and_secrets(rendered):
    arn = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:"
    tls = {f: f"{arn}aws-cluster-{f}-AbCdEf" for f in ("ca-file", "scheduler-cert", "scheduler-key", "worker-cert",
                                                       "worker-key")}
    worker, scheduler = policy(rendered, "aws-cluster-worker-policy"), policy(rendered, "aws-cluster-scheduler-policy")
    for doc in (worker, scheduler):
        assert all(s["Effect"] == "Allow" for s in doc["Statement"])
        actions = {a for s in doc["Statement"] for a in _actions(s)}
        assert actions == {"secretsmanager:GetSecretValue", "s3:ListBucket", "s3:GetObject", "s3:PutObject",
                           "s3:DeleteObject"}
        assert not any("*" in s["Resource"] for s in _statements(doc, "secretsmanager:GetSecretValue"))
    assert _statements(worker, "secretsmanager:GetSecretValue")[0]["Resource"] == sorted(
        [tls["ca-file"], tls["worker-cert"], tls["worker-key"], f"{arn}aws-token-AbCdEf"])
    assert _statements(scheduler, "secretsmanager:GetSecretValue")[0]["Resource"] == sorted(
        [tls["ca-file"], tls["scheduler-cert"], tls["scheduler-key"]])  # no worker key, no user secrets

    def s3_scopes(doc):
        lists = {(s["Resource"], tuple(s["Condition"]["StringLike"]["s3:prefix"]))
                 for s in _statements(doc, "s3:ListBucket")}
        objects = {s["Resource"] for s in _statements(doc, "s3:GetObject")}
        return lists, objects

    data, status = "arn:aws:s3:::aws-data-0f3a", "arn:aws:s3:::aws-cluster-status-0f3a"
    # every node: its status prefix, and dist/ where this client's rh_iac source is uploaded for it to install
    assert s3_scopes(worker) == ({(status, ("status", "status/*")), (status, ("dist", "dist/*")),
                                  (data, ("aws-data", "aws-data/*"))},
                                 {f"{status}/status/*", f"{status}/dist/*", f"{data}/aws-data/*"})
    assert s3_scopes(scheduler) == ({(status, ("status", "status/*")), (status, ("dist", "dist/*"))},
                                    {f"{status}/status/*", f"{status}/dist/*"})
    trust = json.loads(rendered.one("aws:iam/role:Role", "aws-cluster-worker-role").inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    profiles = {x.name: x.inputs["role"] for x in rendered.of_type("aws:iam/instanceProfile:InstanceProfile")}
    assert profiles == {"aws-cluster-scheduler-profile": "aws-cluster-scheduler-role",
                        "aws-cluster-worker-profile": "aws-cluster-worker-role"}
    instances = {x.name: x.inputs["iamInstanceProfile"] for x in rendered.of_type("aws:ec2/instance:Instance")}
    assert instances["aws-cluster-scheduler"] == "aws-cluster-scheduler-profile"
    assert instances["aws-cluster-worker-0"] == "aws-cluster-worker-profile"


def test_user_data_is_small_and_holds_references_only(rendered):
    instances = {x.name: x.inputs["userData"] for x in rendered.of_type("aws:ec2/instance:Instance")}
    for name, text in instances.items():
        assert len(text.encode()) < 16 * 1024, name
        assert CANARY not in text and "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text, name
    arn = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:"
    worker, scheduler = instances["aws-cluster-worker-0"], instances["aws-cluster-scheduler"]
    assert f"{arn}aws-cluster-worker-key-AbCdEf" in worker and f"{arn}aws-token-AbCdEf" in worker
    assert "tls://10.0.1.10:8786" in worker  # workers find the scheduler at its private IP
    assert f"{arn}aws-cluster-scheduler-key-AbCdEf" in scheduler and "aws-token" not in scheduler
    assert "package-26>=1.26" in worker and "s3://aws-cluster-status-0f3a/status/" in worker
    # nodes install this client's rh_iac from the archive uploaded beside the status prefix, not from an index
    upload = rendered.one("aws:s3/bucketObjectv2:BucketObjectv2", "aws-cluster-rh-iac-source").inputs
    assert upload["key"].startswith("dist/rh_iac-") and upload["key"].endswith(".tar.gz")
    for text in (worker, scheduler):
        assert f"s3://aws-cluster-status-0f3a/{upload['key']}" in text
    # the values do go somewhere: into Secrets Manager, as Pulumi secrets (encrypted in state), not into user-data
    versions = {x.name: secret_input(x.inputs["secretString"]) for x in rendered.of_type(
        "aws:secretsmanager/secretVersion:SecretVersion")}
    assert versions["aws-token-value"] == CANARY
    assert "PRIVATE KEY" in versions["aws-cluster-worker-key-value"]
    assert "BEGIN CERTIFICATE" in versions["aws-cluster-ca-file-value"]


def test_everything_taggable_is_tagged(tmp_path, monkeypatch):
    r = render(realistic_stack(), tmp_path, monkeypatch, {**CONFIG, "rh_iac:createVpc": "true"})
    taggable = [x for x in r.resources if x.type in TAGGABLE]
    assert {x.type for x in taggable} == TAGGABLE
    for resource in taggable:
        tags = resource.inputs.get("tags") or {}
        assert tags.get("rh_iac:stack") == "aws" and tags.get("rh_iac:created-by") == "rh_iac", resource
        assert tags.get("rh_iac:resource") in {"aws-cluster", "aws-data", "aws-token"} and tags.get("Name"), resource
    for instance in r.of_type("aws:ec2/instance:Instance"):
        assert instance.inputs["rootBlockDevice"]["tags"]["rh_iac:stack"] == "aws"


def test_network_choice(tmp_path, monkeypatch):
    r = render(realistic_stack(), tmp_path, monkeypatch, {**CONFIG, "rh_iac:createVpc": "true"})
    assert {"aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/internetGateway:InternetGateway",
            "aws:ec2/routeTable:RouteTable", "aws:ec2/routeTableAssociation:RouteTableAssociation"} <= r.types()
    assert not [c for c in r.calls if c.token.endswith(("getVpc", "getSubnets"))]
    assert r.one("aws:ec2/securityGroup:SecurityGroup", "aws-cluster-sg").inputs["vpcId"] == "aws-cluster-vpc-id"
    r = render(realistic_stack(), tmp_path, monkeypatch,
               {**CONFIG, "rh_iac:vpcId": "vpc-0mine", "rh_iac:subnetId": "subnet-0mine"})
    assert not [c for c in r.calls if c.token.endswith(("getVpc", "getSubnets"))]
    assert {x.inputs["subnetId"] for x in r.of_type("aws:ec2/instance:Instance")} == {"subnet-0mine"}
    assert r.one("aws:ec2/securityGroup:SecurityGroup", "aws-cluster-sg").inputs["vpcId"] == "vpc-0mine"


def test_outputs_and_loading_them_back_like_local_ones(tmp_path, monkeypatch, project):
    from rh_iac.compute import _cluster_address, _security
    from rh_iac.project import Project
    from rh_iac.resolver import load

    monkeypatch.setenv("RH_IAC_TEST_TOKEN", CANARY)
    stack = realistic_stack()
    state_dir = Project(project.root).state_dir("aws")
    r = render_under_mocks(aws_render.render, stack, state_dir, CONFIG, RecordingMocks(computed, invoke), "aws-dev")
    assert set(r.outputs) == {"aws-cluster", "aws-data", "aws-flights", "aws-token"}  # the Env is not infrastructure
    cluster = r.outputs["aws-cluster"]
    assert set(cluster) == set(aws_render.OUTPUTS["cluster"])
    assert cluster["scheduler_address"] == "tls://198.51.100.10:8786"
    assert cluster["dashboard_url"] == "http://198.51.100.10:8787/status"
    assert cluster["status_url"] == "s3://aws-cluster-status-0f3a/status/"
    assert r.outputs["aws-data"] == {"url": "s3://aws-data-0f3a/aws-data"}
    assert r.outputs["aws-flights"] == {"url": "s3://aws-data-0f3a/aws-data/aws-flights"}
    assert r.outputs["aws-token"]["ref"].startswith("arn:aws:secretsmanager:")
    rns = Project(project.root).rns()
    for resource in stack:
        if resource.name in r.outputs:
            rns.write({"schema_version": 1, "name": resource.name, "type": resource.kind, "provider": "aws",
                       "stack": "aws", "engine": "pulumi", "spec": resource.spec(), "outputs": r.outputs[resource.name],
                       "status": "deployed"})
    rns.write({"schema_version": 1, "name": "aws-env", "type": "env", "provider": "aws", "stack": "aws",
               "engine": "pulumi", "spec": stack["aws-env"].spec(), "outputs": {}, "status": "deployed"})
    loaded = load("aws-cluster", project=Project(project.root))
    assert _cluster_address(loaded)[0] == "tls://198.51.100.10:8786"
    security = _security(loaded, loaded.outputs["tls"])  # the client's certificate, signed by the stack CA
    assert security.require_encryption and security.tls_client_cert.startswith(str(state_dir))
    assert load("aws-flights", project=Project(project.root)).url == "s3://aws-data-0f3a/aws-data/aws-flights"


def test_no_allowlist_is_an_error_and_an_empty_one_is_internal_only(tmp_path, monkeypatch):
    with pytest.raises(StackConfigError, match=r"rh_iac:allowedCidrs in Pulumi\.aws-dev\.yaml"):
        render(realistic_stack(), tmp_path, monkeypatch, {"aws:region": "us-east-1"})
    r = render(realistic_stack(allowed_cidrs=[]), tmp_path, monkeypatch)
    assert [rule for rule in ingress_rules(r) if not rule.get("self")] == []
    assert r.outputs["aws-cluster"]["scheduler_address"] == "tls://10.0.1.10:8786"  # private: nothing else gets in


@pytest.mark.parametrize("key, value, problem", [
    ("rh_iac:workerInstanceType", "T3 Large", "not a machine type"),
    ("rh_iac:workers", "two", "not a whole number"),
    ("rh_iac:spot", "maybe", "not true or false"),
    ("rh_iac:diskGb", "5", "not a disk size"),
    ("rh_iac:region", "Virginia", "not a region"),
    ("rh_iac:allowedCidrs", ["203.0.113.1/24"], "did you mean 203.0.113.0/24"),
])
def test_invalid_stack_config_names_the_key_and_file(tmp_path, monkeypatch, key, value, problem):
    with pytest.raises(StackConfigError, match=rf"{key} in Pulumi\.aws-dev\.yaml: .*{problem}"):
        render(realistic_stack(), tmp_path, monkeypatch, {**CONFIG, key: value})


def test_declaration_wins_over_config_which_wins_over_defaults(tmp_path, monkeypatch):
    config = {**CONFIG, "rh_iac:workerInstanceType": "m7g.large", "rh_iac:schedulerInstanceType": "t3.small",
              "rh_iac:diskGb": "80"}
    with Stack("aws", provider="aws") as stack:
        Cluster("aws-cluster", instance_type="c6i.xlarge", disk_gb=120)
        Cluster("aws-other")
    r = render(stack, tmp_path, monkeypatch, {**config, "rh_iac:workers": "3"})
    types = {x.name: (x.inputs["instanceType"], x.inputs["rootBlockDevice"]["volumeSize"])
             for x in r.of_type("aws:ec2/instance:Instance")}
    assert types["aws-cluster-scheduler"] == ("t3.small", 120) and types["aws-cluster-worker-1"] == ("c6i.xlarge", 120)
    assert types["aws-other-worker-0"] == ("m7g.large", 80)
    assert sorted(n for n in types if n.startswith("aws-other-worker")) == [f"aws-other-worker-{i}" for i in range(3)]
    # arm64 (Graviton) instance types get an arm64 image
    amis = {c.args["filters"][0]["values"][0] for c in r.calls if c.token == "aws:ec2/getAmi:getAmi"}
    assert amis == {"ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*",
                    "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-*"}


def test_a_cluster_in_another_region_gets_its_own_provider(tmp_path, monkeypatch):
    r = render(realistic_stack(region="eu-west-1"), tmp_path, monkeypatch)
    providers = r.of_type("pulumi:providers:aws")
    assert [(p.name, p.inputs["region"]) for p in providers] == [("aws-eu-west-1", "eu-west-1")]


def test_missing_secret_value_fails_before_anything_is_registered(tmp_path, monkeypatch):
    monkeypatch.delenv("RH_IAC_TEST_TOKEN", raising=False)
    monkeypatch.setenv("RH_IAC_HOME", str(tmp_path / "home"))
    mocks = RecordingMocks(computed, invoke)
    with pytest.raises(SecretError, match="RH_IAC_TEST_TOKEN is not set"):
        render_under_mocks(aws_render.render, realistic_stack(), tmp_path / "state", CONFIG, mocks, "aws-dev")
    assert mocks.args == []


def test_remote_folders_are_not_provisioned(tmp_path, monkeypatch):
    with Stack("aws", provider="aws") as stack:
        lake = Folder("aws-lake", path="s3://existing-bucket/lake")
        Table("aws-events", folder=lake)
    r = render(stack, tmp_path, monkeypatch)
    assert r.resources == []
    assert r.outputs == {"aws-lake": {"url": "s3://existing-bucket/lake"},
                         "aws-events": {"url": "s3://existing-bucket/lake/aws-events"}}


def test_the_aws_stack_file_renders_with_its_pulumi_config(tmp_path, monkeypatch):
    from rh_iac.project import Project

    config = yaml.safe_load((REPO / "Pulumi.aws-dev.yaml").read_text())["config"]
    assert config["rh_iac:stack"] == "aws"
    stack = Project(REPO).load_stack(config["rh_iac:stack"])
    monkeypatch.setenv("RH_IAC_DEMO_TOKEN", CANARY)
    r = render_under_mocks(aws_render.render, stack, tmp_path / "state",
                           {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()},
                           RecordingMocks(computed, invoke), "aws-dev")
    workers = [x for x in r.of_type("aws:ec2/instance:Instance") if "worker" in x.name]
    assert len(workers) == config["rh_iac:workers"] and all("instanceMarketOptions" in w.inputs for w in workers)
    assert {rule["cidrBlocks"][0] for rule in ingress_rules(r) if rule.get("cidrBlocks")} == {"203.0.113.0/24"}
    assert {"aws-cluster", "aws-datasets", "aws-flights", "aws-demo-token"} <= set(r.outputs)


def test_import_rh_iac_loads_no_cloud_sdk_and_is_fast():
    code = ("import sys, time; t = time.perf_counter(); import rh_iac; dt = time.perf_counter() - t; "
            "import rh_iac.providers.cloud_settings; "
            "print(dt, [m for m in ('pulumi', 'pulumi_aws', 'pulumi_gcp', 'cdktf', 'dask') if m in sys.modules])")
    best = None
    for _ in range(3):  # the best of three: the machine is shared, a single run can be slowed by a neighbour
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                             env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout.split(" ", 1)
        assert out[1].strip() == "[]", out
        best = min(best or 9.0, float(out[0]))
    assert best < 0.3, best


def _depends_on(resource) -> set[str]:
    return {urn.rsplit("::", 1)[-1] for urn in resource.dependencies}


def test_nodes_boot_only_once_what_they_fetch_exists(rendered):
    scheduler = _depends_on(rendered.one("aws:ec2/instance:Instance", "aws-cluster-scheduler"))
    worker = _depends_on(rendered.one("aws:ec2/instance:Instance", "aws-cluster-worker-0"))
    assert {"aws-cluster-scheduler-policy", "aws-cluster-scheduler-key-value", "aws-cluster-ca-file-value",
            "aws-cluster-status-public-access"} <= scheduler
    assert {"aws-cluster-worker-policy", "aws-cluster-worker-key-value", "aws-token-value",
            "aws-cluster-scheduler"} <= worker
    assert "aws-token-value" not in scheduler
