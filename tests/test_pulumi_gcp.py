"""The gcp provider's Pulumi rendering, under Pulumi's own mocks: what it would create, and that it is locked down.

Every rendering runs inside ``@pulumi.runtime.test`` (tests/cloud_mocks.py), so an exception inside an ``apply``
fails the test instead of passing silently; assertions are made on what the mock engine was asked to register.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from cloud_mocks import RecordingMocks, Rendering, render_under_mocks, secret_input
from conftest import CANARY, REPO
from rh_iac import Cluster, Env, Folder, Secret, Stack, Table
from rh_iac.errors import PublicIngressError, StackConfigError

gcp_render = pytest.importorskip("rh_iac.providers.gcp.pulumi")

PROJECT = "rh-test-project"
CONFIG = {"gcp:project": PROJECT, "gcp:region": "us-central1",
          "rh_iac:allowedCidrs": ["203.0.113.0/24", "2001:db8::/32"]}
PACKAGES = [f"package-{i}>=1.{i}" for i in range(27)] + ["pandas>=2.2", "pyarrow>=15", "gcsfs>=2024.1"]
SETUP = [f"echo step {i} >> /var/log/rh_iac-setup.log" for i in range(5)] + ["apt-get install -yq htop"]
#: resources GCP lets us label
LABELABLE = {"gcp:storage/bucket:Bucket", "gcp:secretmanager/secret:Secret", "gcp:compute/instance:Instance"}
_LABEL_OK = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def computed(args) -> dict:
    """What GCP would compute: bucket names, secret resource names, service account emails, instance IPs."""
    t, n = args.typ, args.name
    if t == "gcp:storage/bucket:Bucket":
        return {"name": f"{n}-7c1d"}
    if t == "gcp:secretmanager/secret:Secret":
        return {"name": f"projects/{PROJECT}/secrets/{args.inputs['secretId']}"}
    if t == "gcp:serviceaccount/account:Account":
        return {"email": f"{args.inputs['accountId']}@{PROJECT}.iam.gserviceaccount.com"}
    if t == "gcp:compute/instance:Instance":
        nic = dict(args.inputs["networkInterfaces"][0])
        nic["networkIp"] = "10.128.0.10" if n.endswith("scheduler") else "10.128.0.20"
        if nic.get("accessConfigs"):
            nic["accessConfigs"] = [{"natIp": "198.51.100.20"}]
        return {"networkInterfaces": [nic]}
    return {}


def realistic_stack(**cluster_kwargs) -> Stack:
    with Stack("gcp", provider="gcp") as stack:
        env = Env("gcp-env", packages=PACKAGES, env_vars={"MODE": "prod"}, setup=SETUP)
        Cluster("gcp-cluster", env=env, workers=2, **cluster_kwargs)
        data = Folder("gcp-data")
        Table("gcp-flights", folder=data)
        Secret("gcp-token", from_env="RH_IAC_TEST_TOKEN")
    return stack


def render(stack: Stack, tmp_path: Path, monkeypatch, config: dict | None = None) -> Rendering:
    monkeypatch.setenv("RH_IAC_TEST_TOKEN", CANARY)
    monkeypatch.setenv("RH_IAC_HOME", str(tmp_path / "home"))
    return render_under_mocks(gcp_render.render, stack, tmp_path / "state", CONFIG if config is None else config,
                              RecordingMocks(computed, lambda args: {}), "gcp-dev")


def firewalls(r: Rendering) -> dict[str, dict]:
    return {x.name: x.inputs for x in r.of_type("gcp:compute/firewall:Firewall")}


@pytest.fixture
def rendered(tmp_path, monkeypatch) -> Rendering:
    return render(realistic_stack(), tmp_path, monkeypatch)


def test_components_and_their_children(rendered):
    r = rendered
    children = {
        "rh:gcp:Bucket": {"gcp:storage/bucket:Bucket"},
        "rh:gcp:Secret": {"gcp:secretmanager/secret:Secret", "gcp:secretmanager/secretVersion:SecretVersion"},
        "rh:gcp:DaskCluster": {"gcp:compute/firewall:Firewall", "gcp:compute/instance:Instance",
                               "gcp:serviceaccount/account:Account",
                               "gcp:secretmanager/secretIamMember:SecretIamMember",
                               "gcp:storage/bucketIAMMember:BucketIAMMember", "rh:gcp:Bucket", "rh:gcp:Secret",
                               "gcp:storage/bucketObject:BucketObject"},  # this client's rh_iac, for the nodes
    }
    assert r.types() == set(children) | set().union(*children.values())
    for resource in r.resources:
        if resource.parent_type == "pulumi:pulumi:Stack":
            assert resource.type.startswith("rh:gcp:") and not resource.custom, resource
        else:
            assert resource.type in children[resource.parent_type], resource
    top = {(x.type, x.name) for x in r.resources if x.parent_type == "pulumi:pulumi:Stack"}
    assert top == {("rh:gcp:Bucket", "gcp-data"), ("rh:gcp:Secret", "gcp-token"),
                   ("rh:gcp:DaskCluster", "gcp-cluster")}
    assert sorted(x.name for x in r.of_type("gcp:compute/instance:Instance")) == [
        "gcp-cluster-scheduler", "gcp-cluster-worker-0", "gcp-cluster-worker-1"]
    assert {x.inputs["zone"] for x in r.of_type("gcp:compute/instance:Instance")} == {"us-central1-a"}


def test_firewall_is_limited_to_the_configured_cidrs(rendered):
    rules = firewalls(rendered)
    external = {name: rule for name, rule in rules.items() if "sourceRanges" in rule}
    assert set(external) == {"gcp-cluster-dask-v4", "gcp-cluster-dask-v6"}  # IPv4 and IPv6 in separate rules
    assert external["gcp-cluster-dask-v4"]["sourceRanges"] == ["203.0.113.0/24"]
    assert external["gcp-cluster-dask-v6"]["sourceRanges"] == ["2001:db8::/32"]
    scheduler_tags = rendered.one("gcp:compute/instance:Instance", "gcp-cluster-scheduler").inputs["tags"]
    worker_tags = rendered.one("gcp:compute/instance:Instance", "gcp-cluster-worker-0").inputs["tags"]
    for rule in external.values():
        assert rule["direction"] == "INGRESS" and rule["allows"] == [{"protocol": "tcp", "ports": ["8786", "8787"]}]
        assert set(rule["targetTags"]) <= set(scheduler_tags) and not set(rule["targetTags"]) & set(worker_tags)
    assert not any({"0.0.0.0/0", "::/0"} & set(rule.get("sourceRanges", [])) for rule in rules.values())
    internal = rules["gcp-cluster-internal"]
    assert "sourceRanges" not in internal and internal["sourceTags"] == internal["targetTags"] == [worker_tags[0]]
    assert not any("22" in a.get("ports", []) for rule in rules.values() for a in rule["allows"])


def test_ssh_and_public_only_when_asked(tmp_path, monkeypatch):
    r = render(realistic_stack(ssh_cidrs=["198.51.100.7/32"]), tmp_path, monkeypatch)
    ssh = firewalls(r)["gcp-cluster-ssh-v4"]
    assert ssh["sourceRanges"] == ["198.51.100.7/32"] and ssh["allows"] == [{"protocol": "tcp", "ports": ["22"]}]
    with pytest.raises(PublicIngressError):
        realistic_stack(allowed_cidrs=["0.0.0.0/0"])
    r = render(realistic_stack(allowed_cidrs=["0.0.0.0/0"], allow_public=True), tmp_path, monkeypatch)
    assert firewalls(r)["gcp-cluster-dask-v4"]["sourceRanges"] == ["0.0.0.0/0"]  # the check above can fail


def test_spot_only_on_workers_and_shielded_vms(tmp_path, monkeypatch):
    r = render(realistic_stack(spot=True), tmp_path, monkeypatch)
    instances = {x.name: x.inputs for x in r.of_type("gcp:compute/instance:Instance")}
    scheduler = instances.pop("gcp-cluster-scheduler")
    assert scheduler["scheduling"]["provisioningModel"] == "STANDARD" and not scheduler["scheduling"]["preemptible"]
    for worker in instances.values():
        assert worker["scheduling"]["provisioningModel"] == "SPOT" and worker["scheduling"]["preemptible"] is True
    for instance in [scheduler, *instances.values()]:
        assert instance["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableVtpm": True,
                                                      "enableIntegrityMonitoring": True}
        assert instance["metadata"]["block-project-ssh-keys"] == "true"
        assert instance["bootDisk"]["initializeParams"]["image"] == "ubuntu-os-cloud/ubuntu-2404-lts-amd64"
    r = render(realistic_stack(spot=True), tmp_path, monkeypatch, {**CONFIG, "rh_iac:spotFallback": "true"})
    assert {x.inputs["scheduling"]["provisioningModel"] for x in r.of_type("gcp:compute/instance:Instance")} == {
        "STANDARD"}


def test_buckets_have_uniform_access_versioning_and_no_public_access(rendered):
    buckets = {x.name: x.inputs for x in rendered.of_type("gcp:storage/bucket:Bucket")}
    assert set(buckets) == {"gcp-data", "gcp-cluster-status"}
    for bucket in buckets.values():
        assert bucket["uniformBucketLevelAccess"] is True and bucket["versioning"] == {"enabled": True}
        assert bucket["publicAccessPrevention"] == "enforced" and bucket["location"] == "US-CENTRAL1"
    assert buckets["gcp-data"]["forceDestroy"] is False


def test_service_accounts_have_least_privilege(rendered):
    accounts = {x.name: x.inputs["accountId"] for x in rendered.of_type("gcp:serviceaccount/account:Account")}
    assert set(accounts) == {"gcp-cluster-scheduler", "gcp-cluster-worker"}
    assert all(re.match(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$", a) for a in accounts.values()), accounts
    email = {role: f"serviceAccount:{accounts[f'gcp-cluster-{role}']}@{PROJECT}.iam.gserviceaccount.com"
             for role in ("scheduler", "worker")}
    secret_grants = {(x.inputs["member"], x.inputs["secretId"], x.inputs["role"])
                     for x in rendered.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")}
    sid = {f: f"gcp-cluster-{f}-id" for f in ("ca-file", "scheduler-cert", "scheduler-key", "worker-cert",
                                               "worker-key")}
    accessor = "roles/secretmanager.secretAccessor"
    assert secret_grants == {
        *((email["scheduler"], sid[f], accessor) for f in ("ca-file", "scheduler-cert", "scheduler-key")),
        *((email["worker"], sid[f], accessor) for f in ("ca-file", "worker-cert", "worker-key")),
        (email["worker"], "gcp-token-id", accessor),
    }
    bucket_grants = {(x.inputs["member"], x.inputs["bucket"], x.inputs["role"], x.inputs["condition"]["expression"])
                     for x in rendered.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")}
    status, data = "gcp-cluster-status-7c1d", "gcp-data-7c1d"
    admin = "roles/storage.objectAdmin"
    assert bucket_grants == {
        (email["scheduler"], status, admin, gcp_render.prefix_condition(status, "status")),
        (email["worker"], status, admin, gcp_render.prefix_condition(status, "status")),
        (email["scheduler"], status, admin, gcp_render.prefix_condition(status, "dist")),
        (email["worker"], status, admin, gcp_render.prefix_condition(status, "dist")),
        (email["worker"], data, admin, gcp_render.prefix_condition(data, "gcp-data")),
    }
    assert gcp_render.prefix_condition(data, "gcp-data").startswith(
        f'resource.name.startsWith("projects/_/buckets/{data}/objects/gcp-data/")')
    nodes = {x.name: x.inputs["serviceAccount"] for x in rendered.of_type("gcp:compute/instance:Instance")}
    assert nodes["gcp-cluster-scheduler"]["email"] == email["scheduler"].split(":", 1)[1]
    assert nodes["gcp-cluster-worker-1"]["email"] == email["worker"].split(":", 1)[1]


def test_service_account_ids_fit_gcp_rules_for_any_cluster_name():
    long = "a" + "-b" * 31  # 63 characters: the longest resource name rh_iac allows
    ids = {gcp_render.account_id(stack, cluster, role) for stack in ("gcp", "other") for cluster in (long, "c")
           for role in ("scheduler", "worker")}
    assert len(ids) == 8  # unique per stack, cluster and role
    assert all(re.match(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$", i) for i in ids), ids


def test_startup_script_is_small_and_holds_references_only(rendered):
    instances = rendered.of_type("gcp:compute/instance:Instance")
    scripts = {x.name: x.inputs["metadata"]["startup-script"] for x in instances}
    for name, text in scripts.items():
        assert len(text.encode()) < 16 * 1024, name
        assert CANARY not in text and "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text, name
    worker = scripts["gcp-cluster-worker-0"]
    assert f"projects/{PROJECT}/secrets/gcp-gcp-cluster-worker-key" in worker
    assert f"projects/{PROJECT}/secrets/gcp-gcp-token" in worker and "tls://10.128.0.10:8786" in worker
    assert "gcp-gcp-token" not in scripts["gcp-cluster-scheduler"]
    versions = {x.name: secret_input(x.inputs["secretData"])
                for x in rendered.of_type("gcp:secretmanager/secretVersion:SecretVersion")}
    assert versions["gcp-token-value"] == CANARY and "PRIVATE KEY" in versions["gcp-cluster-worker-key-value"]


def test_everything_labelable_is_labelled(rendered):
    labelled = [x for x in rendered.resources if x.type in LABELABLE]
    assert {x.type for x in labelled} == LABELABLE
    for resource in labelled:
        labels = resource.inputs["labels"]
        assert labels["rh_iac-stack"] == "gcp" and labels["rh_iac-created-by"] == "rh_iac", resource
        assert labels["rh_iac-resource"] in {"gcp-cluster", "gcp-data", "gcp-token"}
        assert all(_LABEL_OK.match(k) and re.match(r"^[a-z0-9_-]{0,63}$", v) for k, v in labels.items()), labels
    for instance in rendered.of_type("gcp:compute/instance:Instance"):
        assert instance.inputs["bootDisk"]["initializeParams"]["labels"]["rh_iac-stack"] == "gcp"
    assert gcp_render.label_value("My.Stack/Name" * 10) == ("my_stack_name" * 10)[:63]


def test_outputs(rendered, tmp_path, monkeypatch):
    out = rendered.outputs
    assert set(out) == {"gcp-cluster", "gcp-data", "gcp-flights", "gcp-token"}
    assert set(out["gcp-cluster"]) == set(gcp_render.OUTPUTS["cluster"])
    assert out["gcp-cluster"]["scheduler_address"] == "tls://198.51.100.20:8786"
    assert out["gcp-cluster"]["dashboard_url"] == "http://198.51.100.20:8787/status"
    assert out["gcp-cluster"]["status_url"] == "gs://gcp-cluster-status-7c1d/status/"
    assert Path(out["gcp-cluster"]["tls"]["client_key"]).is_file()
    assert out["gcp-data"] == {"url": "gs://gcp-data-7c1d/gcp-data"}
    assert out["gcp-flights"] == {"url": "gs://gcp-data-7c1d/gcp-data/gcp-flights"}
    assert out["gcp-token"] == {"ref": f"projects/{PROJECT}/secrets/gcp-gcp-token"}  # secret id: <stack>-<name>
    r = render(realistic_stack(), tmp_path, monkeypatch, {**CONFIG, "rh_iac:publicIp": "false"})
    assert r.outputs["gcp-cluster"]["scheduler_address"] == "tls://10.128.0.10:8786"
    assert all(x.inputs["networkInterfaces"][0]["accessConfigs"] == []
               for x in r.of_type("gcp:compute/instance:Instance"))


@pytest.mark.parametrize("key, value, problem", [
    ("rh_iac:schedulerInstanceType", "E2 Standard", "not a machine type"),
    ("rh_iac:allowedCidrs", ["::/0"], "opens the cluster to the whole internet"),
    ("rh_iac:publicIp", "sometimes", "not true or false"),
    ("gcp:region", "central", "not a region"),
])
def test_invalid_stack_config_names_the_key_and_file(tmp_path, monkeypatch, key, value, problem):
    with pytest.raises(StackConfigError, match=rf"{key} in Pulumi\.gcp-dev\.yaml: .*{problem}"):
        render(realistic_stack(), tmp_path, monkeypatch, {**CONFIG, key: value})


def test_zone_and_region_choice(tmp_path, monkeypatch):
    r = render(realistic_stack(), tmp_path, monkeypatch, {**CONFIG, "rh_iac:zone": "us-central1-f"})
    assert {x.inputs["zone"] for x in r.of_type("gcp:compute/instance:Instance")} == {"us-central1-f"}
    r = render(realistic_stack(region="europe-west4", instance_type="t2a-standard-4"), tmp_path, monkeypatch,
               {**CONFIG, "rh_iac:zone": "us-central1-f"})
    zones = {x.name: (x.inputs["zone"], x.inputs["bootDisk"]["initializeParams"]["image"])
             for x in r.of_type("gcp:compute/instance:Instance")}
    assert zones["gcp-cluster-worker-0"] == ("europe-west4-a", "ubuntu-os-cloud/ubuntu-2404-lts-arm64")
    assert zones["gcp-cluster-scheduler"] == ("europe-west4-a", "ubuntu-os-cloud/ubuntu-2404-lts-amd64")


def test_the_gcp_stack_file_renders_with_its_pulumi_config(tmp_path, monkeypatch):
    from rh_iac.project import Project

    config = yaml.safe_load((REPO / "Pulumi.gcp-dev.yaml").read_text())["config"]
    assert config["rh_iac:stack"] == "gcp"
    stack = Project(REPO).load_stack(config["rh_iac:stack"])
    monkeypatch.setenv("RH_IAC_DEMO_TOKEN", CANARY)
    r = render_under_mocks(gcp_render.render, stack, tmp_path / "state",
                           {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()},
                           RecordingMocks(computed, lambda args: {}), "gcp-dev")
    workers = [x for x in r.of_type("gcp:compute/instance:Instance") if "worker" in x.name]
    assert len(workers) == config["rh_iac:workers"]
    assert all(w.inputs["scheduling"]["provisioningModel"] == "SPOT" for w in workers)
    assert {"gcp-cluster", "gcp-datasets", "gcp-flights", "gcp-demo-token"} <= set(r.outputs)


def test_nodes_boot_only_once_what_they_fetch_exists(rendered):
    def depends_on(name):
        return {u.rsplit("::", 1)[-1] for u in rendered.one("gcp:compute/instance:Instance", name).dependencies}

    scheduler, worker = depends_on("gcp-cluster-scheduler"), depends_on("gcp-cluster-worker-0")
    assert {"gcp-cluster-scheduler-scheduler-key", "gcp-cluster-scheduler-0-objects", "gcp-cluster-scheduler-key-value",
            "gcp-cluster-status"} <= scheduler
    assert {"gcp-cluster-worker-secret-gcp-token", "gcp-cluster-worker-1-objects", "gcp-token-value"} <= worker
    assert "gcp-token-value" not in scheduler
