"""Cloud settings of a Cluster: validated when declared, recorded only when set, and resolved against the Pulumi
stack config (declaration > config > defaults) — all without Pulumi."""

from __future__ import annotations

import pytest

from rh_iac import Cluster, Secret, Stack
from rh_iac.errors import (
    CloudOnlyFieldError,
    DeclarationError,
    InvalidCidrError,
    InvalidSpecError,
    PublicIngressError,
    SecretError,
    StackConfigError,
)
from rh_iac.providers.cloud_settings import DEFAULTS, StackConfig, cluster_settings, secret_value, stack_region

LOCAL_SPEC = {"workers": 2, "min_workers": None, "max_workers": None, "threads_per_worker": 1,
              "memory_limit": "auto", "autostop_mins": 60, "env": None}


def cloud_cluster(provider: str = "aws", **kwargs) -> Cluster:
    with Stack("s", provider=provider):
        return Cluster("c", **kwargs)


def config(values: dict[str, str], stack: str = "aws-dev") -> StackConfig:
    return StackConfig(values.get, stack)


def test_a_local_cluster_spec_is_unchanged():
    with Stack("local"):
        cluster = Cluster("dev-cluster")
    assert cluster.spec() == LOCAL_SPEC


def test_cloud_fields_are_recorded_only_when_set():
    assert cloud_cluster().spec() == LOCAL_SPEC
    cluster = cloud_cluster(instance_type="t3.large", spot=False, allowed_cidrs=["203.0.113.0/24", "203.0.113.0/24"],
                            disk_gb=80)
    assert cluster.spec() == {**LOCAL_SPEC, "instance_type": "t3.large", "spot": False,
                              "allowed_cidrs": ["203.0.113.0/24"], "disk_gb": 80}
    assert cloud_cluster(allowed_cidrs=["0.0.0.0/0"], allow_public=True).spec()["allow_public"] is True


@pytest.mark.parametrize("kwargs, error, message", [
    ({"allowed_cidrs": ["0.0.0.0/0"]}, PublicIngressError, r"allowed_cidrs: '0\.0\.0\.0/0' opens .*allow_public"),
    ({"ssh_cidrs": ["::/0"]}, PublicIngressError, "ssh_cidrs"),
    ({"allowed_cidrs": ["10.0.0.1/8"]}, InvalidCidrError, r"did you mean 10\.0\.0\.0/8"),
    ({"allowed_cidrs": ["office"]}, InvalidCidrError, "'office' is not a network"),
    ({"allowed_cidrs": "203.0.113.0/24"}, InvalidCidrError, "a list of CIDRs"),
    ({"instance_type": "T3 Large"}, InvalidSpecError, "instance_type: 'T3 Large' is not a machine type"),
    ({"region": "Virginia"}, InvalidSpecError, "region: 'Virginia' is not a region"),
    ({"disk_gb": 5}, InvalidSpecError, "disk_gb: 5 is not a disk size"),
    ({"disk_gb": True}, InvalidSpecError, "disk_gb"),
    ({"spot": "yes"}, InvalidSpecError, "spot must be True or False"),
    ({"image": ""}, InvalidSpecError, "image"),
    ({"min_workers": 1, "max_workers": 3}, InvalidSpecError, "adaptive scaling .* only available on local"),
])
def test_invalid_cloud_fields_name_the_cluster_and_field(kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        cloud_cluster(**kwargs)
    assert "Cluster 'c'" in str(info.value) and isinstance(info.value, DeclarationError)


def test_cloud_fields_on_a_local_cluster_are_refused():
    with pytest.raises(CloudOnlyFieldError, match=r"Cluster 'c': spot, region only apply .* provider 'local'"):
        with Stack("s"):
            Cluster("c", spot=True, region="us-east-1")
    with pytest.raises(CloudOnlyFieldError, match="instance_type only applies"):
        Cluster("c", instance_type="t3.large", provider="local")
    with pytest.raises(CloudOnlyFieldError, match="disk_gb"):  # a cluster's own provider decides, not the stack's
        with Stack("s", provider="aws"):
            Cluster("c", disk_gb=20, provider="local")
    with Stack("s", provider="local"):
        assert Cluster("d", disk_gb=20, provider="gcp").disk_gb == 20
    loaded = Cluster("c", provider="aws")  # how the resolver rebuilds a cloud cluster from RNS
    assert loaded.provider == "aws" and loaded.spec() == LOCAL_SPEC


def test_settings_come_from_declaration_then_config_then_defaults():
    cfg = config({"workerInstanceType": "m6i.large", "schedulerInstanceType": "t3.small", "workers": "4",
                  "allowedCidrs": '["198.51.100.0/24"]', "spot": "true", "diskGb": "70"})
    s = cluster_settings(cloud_cluster(instance_type="c6i.xlarge"), cfg, "us-east-1")
    assert (s.worker_instance_type, s.scheduler_instance_type, s.workers, s.spot, s.disk_gb) == (
        "c6i.xlarge", "t3.small", 4, True, 70)
    assert s.allowed_cidrs == ("198.51.100.0/24",) and s.ssh_cidrs == () and s.region == "us-east-1"
    s = cluster_settings(cloud_cluster(workers=1, spot=False, allowed_cidrs=[]), cfg, "us-east-1")
    assert (s.workers, s.spot, s.allowed_cidrs) == (1, False, ())
    s = cluster_settings(cloud_cluster(provider="gcp", allowed_cidrs=[]), config({}, "gcp-dev"), "us-central1")
    assert (s.worker_instance_type, s.scheduler_instance_type, s.disk_gb, s.workers) == (
        DEFAULTS["gcp"]["worker_instance_type"], DEFAULTS["gcp"]["scheduler_instance_type"], 50, 2)
    assert s.idle_timeout_s == 3600 and s.public_ip is True
    assert cluster_settings(cloud_cluster(autostop_mins=-1, allowed_cidrs=[]), cfg, "us-east-1").idle_timeout_s is None
    configured = config({"allowedCidrs": "203.0.113.0/24, 198.51.100.0/24"})
    assert cluster_settings(cloud_cluster(allowed_cidrs=[]), configured, "us-east-1").allowed_cidrs == ()  # [] wins


def test_config_lists_parse_as_json_or_commas():
    cfg = config({"allowedCidrs": "203.0.113.0/24, 198.51.100.0/24"})
    assert cluster_settings(cloud_cluster(), cfg, "us-east-1").allowed_cidrs == ("203.0.113.0/24", "198.51.100.0/24")
    with pytest.raises(StackConfigError, match=r"rh_iac:allowedCidrs in Pulumi\.aws-dev\.yaml: .* is not a list"):
        cluster_settings(cloud_cluster(), config({"allowedCidrs": "[203.0.113.0/24"}), "us-east-1")
    with pytest.raises(StackConfigError, match="allowPublic"):
        cluster_settings(cloud_cluster(), config({"allowedCidrs": '["0.0.0.0/0"]'}), "us-east-1")
    public = config({"allowedCidrs": '["0.0.0.0/0"]', "allowPublic": "true"})
    assert cluster_settings(cloud_cluster(), public, "us-east-1").allowed_cidrs == ("0.0.0.0/0",)


def test_an_invalid_config_value_fails_even_when_the_declaration_overrides_it():
    with pytest.raises(StackConfigError, match=r"rh_iac:workers in Pulumi\.aws-dev\.yaml: 'two' is not a whole"):
        cluster_settings(cloud_cluster(workers=3, allowed_cidrs=[]), config({"workers": "two"}), "us-east-1")


def test_stack_region():
    assert stack_region("aws", config({}), {}.get) == "us-east-1"
    assert stack_region("aws", config({}), {"region": "eu-west-1"}.get) == "eu-west-1"
    assert stack_region("aws", config({"region": "ap-south-1"}), {"region": "eu-west-1"}.get) == "ap-south-1"
    with pytest.raises(StackConfigError, match=r"aws:region in Pulumi\.aws-dev\.yaml: 'Ireland' is not a region"):
        stack_region("aws", config({}), {"region": "Ireland"}.get)


def test_secret_values_for_the_cloud(tmp_path, monkeypatch):
    monkeypatch.setenv("RH_IAC_HOME", str(tmp_path / "home"))
    with Stack("s", provider="aws"):
        given = Secret("given", from_env="RH_IAC_T_GIVEN")
        generated = Secret("generated", generate=True)
    with pytest.raises(SecretError, match="RH_IAC_T_GIVEN is not set"):
        secret_value(given, tmp_path)
    value = "given-secret-4c9e1f7a2b"  # long and distinctive: random ciphertext cannot contain it by chance
    monkeypatch.setenv("RH_IAC_T_GIVEN", value)
    assert secret_value(given, tmp_path) == value
    monkeypatch.delenv("RH_IAC_T_GIVEN")
    assert secret_value(given, tmp_path) == value  # kept (encrypted) for the next deploy without the variable
    first = secret_value(generated, tmp_path)
    assert len(first) >= 20 and secret_value(generated, tmp_path) == first  # generated once, then stable
    assert value not in "".join(p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file())
