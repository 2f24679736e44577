"""Helpers for the cloud-node runtime tests: a fake "aws" (moto's S3 + Secrets Manager) holding a cluster's TLS
material, and node agents run as local processes from the files their user-data would write.

    cloud = FakeAwsCloud.create(endpoint, tmp_path)        # bucket, TLS secrets, the canary secret
    config = cloud.node_config("scheduler", tmp_path)      # a NodeConfig bound to 127.0.0.1, poweroff off
    with running_agent(config, cloud.env, tmp_path) as proc: ...   # stopped by process group, even on failure
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from runtime.bootstrap import NodeConfig, user_data
from conftest import CANARY
from moto_server import DUMMY_CREDENTIALS


BUCKET = "rh-test-bucket"
CANARY_VAR = "RH_IAC_CANARY"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def heredoc(script: str, tag: str) -> str:
    """The body of the here-document ``tag`` of a bootstrap script."""
    match = re.search(rf"<<'{tag}'\n(.*?)\n{tag}\n", script, re.S)
    assert match, f"no here-document {tag} in the user-data"
    return match.group(1)


@dataclass
class FakeAwsCloud:
    """A moto endpoint with the stack's bucket and the cluster's secrets; ``refs[role]`` are a node's secret refs."""

    endpoint: str
    tls: object
    refs: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **DUMMY_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    @classmethod
    def create(cls, endpoint: str, tmp_path: Path, cluster: str = "c1") -> "FakeAwsCloud":
        import boto3

        from rh_iac.tls import issue_cluster_tls

        tls = issue_cluster_tls(tmp_path / "stack", "aws-dev", cluster)
        kw = dict(region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing")
        s3, sm = boto3.client("s3", **kw), boto3.client("secretsmanager", **kw)
        if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            s3.create_bucket(Bucket=BUCKET)

        def store(name: str, value: str) -> str:
            try:
                return sm.create_secret(Name=name, SecretString=value)["ARN"]
            except sm.exceptions.ResourceExistsException:
                return sm.put_secret_value(SecretId=name, SecretString=value)["ARN"]

        ca = store(f"rh_iac/{cluster}/tls/ca", Path(tls.ca_file).read_text())
        cloud = cls(endpoint, tls)
        for role in ("scheduler", "worker"):
            cloud.refs[role] = {
                "tls_ca": ca,
                "tls_cert": store(f"rh_iac/{cluster}/tls/{role}-cert", Path(getattr(tls, f"{role}_cert")).read_text()),
                "tls_key": store(f"rh_iac/{cluster}/tls/{role}-key", Path(getattr(tls, f"{role}_key")).read_text()),
            }
        cloud.refs["worker"][f"secret:{CANARY_VAR}"] = store("rh_iac/demo-token", CANARY)
        return cloud

    def status_url(self, cluster: str) -> str:
        return f"s3://{BUCKET}/.rh_iac/{cluster}/"

    def node_config(self, role: str, tmp_path: Path, *, cluster: str = "c1", name: str | None = None,
                    **overrides) -> NodeConfig:
        name = name or role
        values = dict(
            cloud="aws", role=role, stack="aws-dev", cluster=cluster, region="us-east-1",
            secret_refs=dict(self.refs[role]), status_url=self.status_url(cluster),
            env_vars={"RH_IAC_STAGE": "test"}, host="127.0.0.1", dashboard_port=0, node_name=name,
            poweroff_on_exit=False, ready_timeout_s=60, idle_timeout_s=None, death_timeout_s=600,
            state_dir=str(tmp_path / name / "state"), log_file=str(tmp_path / name / "bootstrap.log"),
        )
        values.update(overrides)
        return NodeConfig(**values)

    def objects(self, cluster: str = "c1") -> dict[str, bytes]:
        """Every object under the cluster's status prefix: ``{file name: bytes}``."""
        import boto3

        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=self.endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        prefix = f".rh_iac/{cluster}/"
        listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        return {o["Key"][len(prefix):]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listing}


def write_node_files(config: NodeConfig, tmp_path: Path) -> tuple[Path, Path]:
    """The agent and its config exactly as the user-data writes them: ``(agent path, config path)``."""
    import gzip

    script = user_data(config)
    root = tmp_path / (config.node_name or config.role) / "opt"
    root.mkdir(parents=True, exist_ok=True)
    agent, conf = root / "node_agent.py", root / "node.json"
    agent.write_bytes(gzip.decompress(base64.b64decode(heredoc(script, "RH_IAC_AGENT"))))
    conf.write_text(heredoc(script, "RH_IAC_CONFIG"))
    Path(config.log_file).parent.mkdir(parents=True, exist_ok=True)
    return agent, conf


def stop_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the agent's process group (agent, Dask process, nanny's worker), wait until all are gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
    proc.poll()


@contextmanager
def running_agent(config: NodeConfig, env: dict[str, str], tmp_path: Path,
                  command: str = "run") -> Iterator[subprocess.Popen]:
    """The node agent for ``config`` as a process in its own session; its whole group is stopped on exit."""
    agent, conf = write_node_files(config, tmp_path)
    with open(config.log_file, "ab") as log:
        proc = subprocess.Popen([sys.executable, str(agent), command, str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


class FakeGcp:
    """GCP's metadata server, Secret Manager and GCS upload API, as much as the node agent uses, on 127.0.0.1.

    Requests without the metadata header or the bearer token it hands out are refused, as GCP does. ``objects``
    holds the uploaded objects by ``bucket/name``; ``env`` points the agent at this server.
    """

    TOKEN = "fake-gcp-access-token"

    def __init__(self, secrets: dict[str, str]) -> None:
        import http.server
        import threading

        self.secrets = secrets  # "projects/p/secrets/name" -> value
        self.objects: dict[str, bytes] = {}
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def _send(self, code: int, body: dict | None = None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {FakeGcp.TOKEN}":
                    return True
                self._send(401, {"error": {"message": "missing or wrong bearer token"}})
                return False

            def do_GET(self) -> None:
                path = urllib.parse.urlparse(self.path).path
                if path == "/computeMetadata/v1/instance/service-accounts/default/token":
                    if self.headers.get("Metadata-Flavor") != "Google":
                        return self._send(403)
                    return self._send(200, {"access_token": FakeGcp.TOKEN, "expires_in": 3600})
                match = re.fullmatch(r"/v1/(projects/[^/]+/secrets/[^/]+)/versions/latest:access", path)
                if match and self._authorized():
                    if match.group(1) not in fake.secrets:
                        return self._send(404, {"error": {"message": f"Secret [{match.group(1)}] not found"}})
                    data = base64.b64encode(fake.secrets[match.group(1)].encode()).decode()
                    return self._send(200, {"payload": {"data": data}})
                if not match:
                    self._send(404)

            def do_POST(self) -> None:
                url = urllib.parse.urlparse(self.path)
                match = re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o", url.path)
                query = urllib.parse.parse_qs(url.query)
                if not match or query.get("uploadType") != ["media"]:
                    return self._send(404)
                if self._authorized():
                    body = self.rfile.read(int(self.headers["Content-Length"]))
                    fake.objects[f"{match.group(1)}/{query['name'][0]}"] = body
                    self._send(200, {"name": query["name"][0]})

            def do_DELETE(self) -> None:
                match = re.fullmatch(r"/storage/v1/b/([^/]+)/o/([^/]+)", urllib.parse.urlparse(self.path).path)
                if match and self._authorized():
                    key = f"{match.group(1)}/{urllib.parse.unquote(match.group(2))}"
                    self._send(204 if fake.objects.pop(key, None) is not None else 404)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def env(self) -> dict[str, str]:
        host = self.url.removeprefix("http://")
        return {**os.environ, "GCE_METADATA_HOST": host, "STORAGE_EMULATOR_HOST": self.url,
                "RH_IAC_SECRETMANAGER_ENDPOINT": self.url}

    def __enter__(self) -> "FakeGcp":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
