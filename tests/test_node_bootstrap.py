"""The cloud node's user-data: small, deterministic, references only, the client's versions; bad configs refused; a
node whose secret is missing fails, uploads its log, and the deploy's wait reports that log."""

from __future__ import annotations

import ast
import base64
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rh_iac.errors import ClusterNotReadyError, NodeConfigError
from runtime import node_agent
from runtime.bootstrap import USER_DATA_LIMIT, NodeConfig, agent_source, node_requirements, source_archive, user_data
from runtime.readiness import wait_ready
from conftest import CANARY
from moto_server import moto_s3, s3_env  # noqa: F401 - fixtures
from node_helpers import FakeAwsCloud, free_port, heredoc, running_agent, write_node_files

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rh_iac/aws-dev/analytics/{}-AbCdEf"


def realistic(role: str = "worker", cloud: str = "aws", **overrides) -> NodeConfig:
    """30 packages, 5 setup commands, 10 env vars, 3 delivered secrets: a full-sized node."""
    refs = {"tls_ca": ARN.format("tls-ca"), "tls_cert": ARN.format(f"tls-{role}-cert"),
            "tls_key": ARN.format(f"tls-{role}-key")}
    refs.update({f"secret:TOKEN_{i}": ARN.format(f"user-secret-{i}") for i in range(3)})
    values = dict(
        cloud=cloud, role=role, stack="aws-dev", cluster="analytics", region="eu-west-1", secret_refs=refs,
        status_url=("s3" if cloud == "aws" else "gs") + "://rh-iac-aws-dev-data-4f2a9c/.rh_iac/analytics/",
        packages=tuple(f"scientific-package-number-{i}[extra]>=1.{i}.0,<3" for i in range(30)),
        env_vars={f"ANALYTICS_SETTING_{i}": f"value-{i}-with-some-length/and/path" for i in range(10)},
        setup=tuple(f"mkdir -p /data/scratch{i} && chmod 1777 /data/scratch{i} && echo prepared-{i}" for i in range(5)),
        scheduler_address="tls://10.0.1.23:8786" if role == "worker" else None, idle_timeout_s=1800,
    )
    values.update(overrides)
    return NodeConfig(**values)


@pytest.mark.parametrize("role", ["scheduler", "worker"])
@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_realistic_user_data_is_under_16_kb_and_holds_no_secret_or_key(role, cloud):
    script = user_data(realistic(role, cloud))
    assert len(script.encode()) < USER_DATA_LIMIT
    assert CANARY not in script and "-----BEGIN" not in script and "PRIVATE KEY" not in script
    agent = gzip.decompress(base64.b64decode(heredoc(script, "RH_IAC_AGENT"))).decode()
    assert CANARY not in agent and "-----BEGIN" not in agent
    assert user_data(realistic(role, cloud)) == script  # deterministic: a redeploy does not replace the instance


def test_user_data_is_valid_bash_that_writes_the_agent_its_config_and_the_clients_pins():
    from importlib.metadata import version

    config = realistic()
    script = user_data(config)
    subprocess.run(["bash", "-n"], input=script.encode(), check=True)
    assert script.startswith("#!/bin/bash\n") and "/var/log/rh_iac-bootstrap.log" in script
    agent = gzip.decompress(base64.b64decode(heredoc(script, "RH_IAC_AGENT"))).decode()
    assert agent == agent_source()  # node_agent.py without docstrings: the same code
    names = {n.name for n in ast.walk(ast.parse(agent)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert names == {n.name for n in ast.walk(ast.parse(Path(node_agent.__file__).read_text()))
                     if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert json.loads(heredoc(script, "RH_IAC_CONFIG")) == json.loads(config.to_json())
    assert json.loads(config.to_json())["secret_refs"] == config.secret_refs
    requirements = heredoc(script, "RH_IAC_REQUIREMENTS").splitlines()
    assert requirements == node_requirements(config)
    for name in ("dask", "distributed", "cloudpickle", "msgpack", "boto3"):
        assert f"{name}=={version(name)}" in requirements
    assert requirements[-30:] == list(config.packages)
    assert f"--python {sys.version_info.major}.{sys.version_info.minor} " in script
    assert f"--no-deps rh_iac=={version('rh_iac')}" in script
    for command in config.setup:
        assert f"\n{command}\n" in script
    assert "export ANALYTICS_SETTING_0=value-0-with-some-length/and/path\n" in script
    assert 'AGENT="$R/venv/bin/python $R/node_agent.py run $R/node.json"\n' in script
    assert "systemctl enable rh_iac-node.service\n" in script and "ExecStart=$AGENT\n" in script
    assert "exec systemctl start --no-block rh_iac-node.service" in script
    assert script.rstrip().endswith("exec $AGENT")


def test_gcp_nodes_do_not_need_boto3():
    assert not [r for r in node_requirements(realistic(cloud="gcp")) if r.startswith(("boto3", "s3fs"))]
    assert "pip\" install -q uv;" in user_data(realistic(cloud="gcp"))
    assert "pip\" install -q uv boto3;" in user_data(realistic(cloud="aws"))


@pytest.mark.parametrize("overrides, match", [
    ({"role": "head"}, "role must be 'scheduler' or 'worker'"),
    ({"cloud": "azure"}, "cloud 'azure' is not one of"),
    ({"status_url": "gs://bucket/.rh_iac/analytics/"}, r"status_url .* must be a s3://bucket/prefix/ URL"),
    ({"scheduler_address": "10.0.1.23:8786"}, r"scheduler_address must be 'tls://<ip>:<port>'"),
    ({"scheduler_address": "tcp://10.0.1.23:8786"}, r"workers speak TLS only"),
    ({"secret_refs": {"tls_ca": "a", "tls_cert": "b"}}, "secret_refs lacks tls_key"),
    ({"secret_refs": {"tls_ca": "a", "tls_cert": "b", "tls_key": "c", "token": "d"}}, "'secret:<ENV_VAR_NAME>'"),
    ({"secret_refs": {"tls_ca": "a", "tls_cert": "b", "tls_key": "c", "secret:1BAD": "d"}}, "'secret:<ENV_VAR_NAME>'"),
    ({"env_vars": {"BAD-NAME": "x"}}, "not a valid environment variable name"),
    ({"env_vars": {"KEY": "-----BEGIN PRIVATE KEY-----\nMIGH..."}}, "env_vars contains key material"),
    ({"setup": ("echo '-----BEGIN CERTIFICATE-----' > /etc/ca.pem",)}, "setup contains key material"),
    ({"python": "3"}, "python must be a major.minor version"),
    ({"death_timeout_s": 0}, "must be positive seconds"),
    ({"threads_per_worker": 0}, "threads_per_worker must be a positive integer"),
])
def test_bad_node_configs_are_refused_naming_the_field(overrides, match):
    with pytest.raises(NodeConfigError, match=match) as info:
        realistic(**overrides)
    assert "cluster 'analytics'" in str(info.value)


def test_user_data_over_the_limit_and_heredoc_breakers_are_refused():
    with pytest.raises(NodeConfigError, match=r"over the 16384-byte limit"):
        user_data(realistic(packages=tuple(f"package-with-a-long-name-{i}==1.0.0" for i in range(400))))
    with pytest.raises(NodeConfigError, match="RH_IAC_REQUIREMENTS"):
        user_data(realistic(packages=("RH_IAC_REQUIREMENTS",)))


def test_a_missing_secret_fails_the_node_which_uploads_its_log_and_the_wait_reports_it(s3_env, tmp_path):
    cloud = FakeAwsCloud.create(s3_env, tmp_path)
    refs = {**cloud.refs["scheduler"], "secret:API_TOKEN": "rh_iac/aws-dev/never-created"}
    address = f"tls://127.0.0.1:{free_port()}"
    config = cloud.node_config("scheduler", tmp_path, scheduler_port=int(address.rsplit(":", 1)[1]), secret_refs=refs)
    since = time.time()
    with running_agent(config, cloud.env, tmp_path) as proc:
        assert proc.wait(timeout=30) == 1
    objects = cloud.objects()
    failure = json.loads(objects["scheduler-scheduler.failed.json"])
    assert "'secret:API_TOKEN' (ref 'rh_iac/aws-dev/never-created')" in failure["error"]
    assert "ResourceNotFoundException" in objects["scheduler-scheduler.log"].decode()
    assert not Path(config.state_dir, "ready.json").exists()

    started = time.monotonic()  # a failure reported since the deploy began ends the wait at once
    with pytest.raises(ClusterNotReadyError, match=r"a node's bootstrap failed") as info:
        wait_ready(address, cloud.tls.to_dict(), cloud.status_url("c1"), timeout=60, since=since)
    assert time.monotonic() - started < 10
    assert "--- tail of s3://rh-test-bucket/.rh_iac/c1/scheduler-scheduler.log ---" in str(info.value)
    assert "rh_iac/aws-dev/never-created" in str(info.value)

    with pytest.raises(ClusterNotReadyError, match=r"port unreachable(.|\n)*never-created"):  # without `since`
        wait_ready(address, cloud.tls.to_dict(), cloud.status_url("c1"), timeout=2)


def test_a_failed_bootstrap_step_is_reported_by_the_agents_report_command(s3_env, tmp_path):
    cloud = FakeAwsCloud.create(s3_env, tmp_path)
    config = cloud.node_config("worker", tmp_path, scheduler_address="tls://127.0.0.1:1")
    Path(config.log_file).parent.mkdir(parents=True)
    Path(config.log_file).write_text("ERROR: No matching distribution found for not-a-real-package==9.9\n")
    with running_agent(config, cloud.env, tmp_path, "report") as proc:
        assert proc.wait(timeout=30) == 1
    objects = cloud.objects()
    assert "bootstrap script failed with exit code 1" in json.loads(objects["worker-worker.failed.json"])["error"]
    assert "not-a-real-package==9.9" in objects["worker-worker.log"].decode()


def test_the_bootstrap_script_itself_reports_a_failed_install_to_the_status_url(s3_env, tmp_path):
    """Runs the real user-data with bash, off a cloud node: the package index is unreachable, so the install step
    fails, and the script's exit trap has the agent upload the failure and the log tail."""
    import os
    import signal

    cloud = FakeAwsCloud.create(s3_env, tmp_path)
    config = cloud.node_config("worker", tmp_path, scheduler_address="tls://127.0.0.1:1")
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "python3").symlink_to(sys.executable)  # a python3 with venv (and boto3, as the tools venv has)
    env = {k: v for k, v in cloud.env.items() if not k.startswith("PIP_")}
    env.update({"RH_IAC_ROOT": str(tmp_path / "opt"), "PATH": f"{shims}:{os.environ['PATH']}",
                "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0",
                "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    proc = subprocess.Popen(["bash", "-c", user_data(config)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode != 0
    assert (tmp_path / "opt" / "node_agent.py").read_text() == agent_source()
    objects = cloud.objects()
    failure = json.loads(objects["worker-worker.failed.json"])
    assert f"exit code {proc.returncode}" in failure["error"]
    log = objects["worker-worker.log"].decode()
    assert "rh_iac bootstrap of the worker starts" in log and "uv" in log
    assert log.strip() and log.splitlines()[0] in Path(config.log_file).read_text()
    assert CANARY not in output.decode() + log


def test_nodes_can_install_this_clients_rh_iac_from_the_bucket(s3_env, tmp_path):
    import tarfile

    import boto3

    from rh_iac.versions import local_versions

    archive = source_archive(tmp_path / "dist")
    version = local_versions()["rh_iac"]
    assert archive.name == f"rh_iac-{version}.tar.gz"
    assert source_archive(tmp_path / "again").read_bytes() == archive.read_bytes()  # deterministic: no redeploy
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert tar.extractfile(f"rh_iac-{version}/runtime/node_agent.py").read() == \
            Path(node_agent.__file__).read_bytes()
    assert f"rh_iac-{version}/pyproject.toml" in names and f"rh_iac-{version}/rh_iac/versions.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

    cloud = FakeAwsCloud.create(s3_env, tmp_path)
    url = f"{cloud.status_url('c1')}{archive.name}"
    boto3.client("s3", endpoint_url=s3_env).upload_file(str(archive), "rh-test-bucket", url.split("/", 3)[3])
    config = cloud.node_config("worker", tmp_path, scheduler_address="tls://127.0.0.1:1", rh_iac_requirement=url)
    script = user_data(config)
    subprocess.run(["bash", "-n"], input=script.encode(), check=True)
    local = f'"$R/dist/{archive.name}"'
    assert f'node_agent.py" fetch "$R/node.json" {url} {local}\n' in script
    assert f'--no-deps {local}\n' in script

    agent, conf = write_node_files(config, tmp_path)  # the agent's fetch, as the script runs it
    dest = tmp_path / "fetched" / archive.name
    subprocess.run([sys.executable, str(agent), "fetch", str(conf), url, str(dest)], env=cloud.env, check=True,
                   timeout=60, capture_output=True)
    assert dest.read_bytes() == archive.read_bytes()

    for bad in ("gs://rh-test-bucket/rh_iac-0.1.0.tar.gz", f"{cloud.status_url('c1')}rh_iac.zip"):
        with pytest.raises(NodeConfigError, match="rh_iac_requirement"):
            cloud.node_config("worker", tmp_path, scheduler_address="tls://127.0.0.1:1", rh_iac_requirement=bad)
