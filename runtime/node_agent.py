"""The node agent: on a cloud instance, turns a bootstrap config into a running, TLS-only Dask scheduler or worker.

The bootstrap script (:mod:`runtime.bootstrap`) writes this file and a JSON config to the node and runs::

    /opt/rh_iac/venv/bin/python node_agent.py run /opt/rh_iac/node.json      # fetch secrets, start Dask, mark ready
    /opt/rh_iac/tools/bin/python node_agent.py report /opt/rh_iac/node.json --exit-code 3   # a bootstrap step failed
    /opt/rh_iac/tools/bin/python node_agent.py fetch /opt/rh_iac/node.json s3://bucket/key dest   # e.g. the wheel

``run`` fetches the TLS certificate, key and CA and the delivered secrets from the cloud's secret store with the
instance's own identity (AWS Secrets Manager through boto3; GCP Secret Manager's REST API with a metadata-server
token), writes the TLS files 0600 in a 0700 directory, starts the scheduler (with its idle timeout) or the worker
(with its death timeout), waits until it answers over TLS, and writes a readiness marker to
``/var/lib/rh_iac/ready.json`` and to ``<status_url><role>-<node>.ready.json``. The tail of the bootstrap log goes to
``<status_url><role>-<node>.log`` when the node is ready, when it fails (with ``<role>-<node>.failed.json``) and when
Dask exits; then the node powers off, so an idle or orphaned cluster stops billing.

Only the standard library is imported at module level: ``report`` runs before the node's venv exists. Endpoints
follow the usual overrides, so tests point the agent at local servers: ``AWS_ENDPOINT_URL`` (boto3),
``GCE_METADATA_HOST``, ``STORAGE_EMULATOR_HOST`` and ``RH_IAC_SECRETMANAGER_ENDPOINT`` (GCP). Secret values are
never logged, and are masked in every log tail the agent uploads.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

LOG = logging.getLogger("rh_iac.node_agent")
TAIL_BYTES = 64 * 1024
SECRET_PREFIX = "secret:"
TLS_KEYS = ("tls_ca", "tls_cert", "tls_key")


# --- the cloud's secret and object stores --------------------------------------------------------------------
def _split_url(url: str) -> tuple[str, str]:
    """``("bucket", "key")`` of ``s3://bucket/key`` or ``gs://bucket/key``."""
    parsed = urllib.parse.urlparse(url)
    return parsed.netloc, parsed.path.lstrip("/")


def _gcp_token() -> str:
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    request = urllib.request.Request(
        f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token",
        headers={"Metadata-Flavor": "Google"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


def _gcp_request(method: str, url: str, data: bytes | None = None, content_type: str = "") -> bytes:
    headers = {"Authorization": f"Bearer {_gcp_token()}"}
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def _gcs_base() -> str:
    host = os.environ.get("STORAGE_EMULATOR_HOST", "https://storage.googleapis.com")
    return host if "://" in host else f"http://{host}"


class CloudStores:
    """The secret store and the object store of one cloud, reached with the node's own identity."""

    def __init__(self, cloud: str, region: str) -> None:
        if cloud not in ("aws", "gcp"):
            raise ValueError(f"unknown cloud {cloud!r}: the node agent knows 'aws' and 'gcp'")
        self.cloud, self.region = cloud, region

    def _boto3(self, service: str):
        import boto3  # installed in the node's tools venv and main venv on aws

        return boto3.client(service, region_name=self.region)

    def secret(self, ref: str) -> str:
        """The current value of the secret ``ref`` (an AWS secret id/ARN, or a GCP ``projects/.../secrets/...``)."""
        if self.cloud == "aws":
            value = self._boto3("secretsmanager").get_secret_value(SecretId=ref)
            return value["SecretString"] if "SecretString" in value else value["SecretBinary"].decode()
        endpoint = os.environ.get("RH_IAC_SECRETMANAGER_ENDPOINT", "https://secretmanager.googleapis.com")
        name = ref if "/versions/" in ref else f"{ref}/versions/latest"
        body = json.loads(_gcp_request("GET", f"{endpoint}/v1/{name}:access"))
        return base64.b64decode(body["payload"]["data"]).decode()

    def put(self, url: str, data: bytes, content_type: str) -> None:
        bucket, key = _split_url(url)
        if self.cloud == "aws":
            self._boto3("s3").put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
            return
        query = urllib.parse.urlencode({"uploadType": "media", "name": key})
        _gcp_request("POST", f"{_gcs_base()}/upload/storage/v1/b/{bucket}/o?{query}", data, content_type)

    def get(self, url: str) -> bytes:
        bucket, key = _split_url(url)
        if self.cloud == "aws":
            return self._boto3("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        quoted = urllib.parse.quote(key, safe="")
        return _gcp_request("GET", f"{_gcs_base()}/storage/v1/b/{bucket}/o/{quoted}?alt=media")

    def delete(self, url: str) -> None:
        bucket, key = _split_url(url)
        if self.cloud == "aws":
            self._boto3("s3").delete_object(Bucket=bucket, Key=key)
            return
        _gcp_request("DELETE", f"{_gcs_base()}/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}")


# --- the node ------------------------------------------------------------------------------------------------
def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


class Node:
    """One node's lifecycle, driven by its bootstrap config (the JSON form of ``runtime.bootstrap.NodeConfig``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.role: str = config["role"]
        self.name: str = config.get("node_name") or socket.gethostname()
        self.state_dir = Path(config["state_dir"])
        self.stores = CloudStores(config["cloud"], config["region"])
        self.status_prefix = config["status_url"].rstrip("/") + f"/{self.role}-{self.name}"
        self.masked: list[str] = []  # secret values fetched so far: masked in every uploaded log tail
        self.proc: subprocess.Popen | None = None
        self.security: Any = None  # the role's distributed.Security, set once the TLS files are written
        self.stopping = False

    # status objects
    def _put_json(self, suffix: str, data: dict[str, Any]) -> None:
        self.stores.put(self.status_prefix + suffix, json.dumps(data, indent=2).encode(), "application/json")

    def upload_log(self) -> None:
        """Upload the tail of the bootstrap log, with every fetched secret value masked."""
        try:
            with open(self.config["log_file"], "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - TAIL_BYTES))
                tail = f.read().decode(errors="replace")
        except OSError as exc:
            tail = f"(the bootstrap log {self.config['log_file']} cannot be read: {exc})\n"
        for value in sorted(self.masked, key=len, reverse=True):
            tail = tail.replace(value, "***")
        try:
            self.stores.put(self.status_prefix + ".log", tail.encode(), "text/plain")
        except Exception as exc:  # noqa: BLE001 - the node must still report and stop when the bucket is unreachable
            LOG.error("cannot upload the log tail to %s.log: %s", self.status_prefix, exc)

    def fail(self, error: str) -> None:
        """Record a failed boot (``<role>-<node>.failed.json`` and the log tail), then power off if configured."""
        LOG.error("%s %s failed: %s", self.role, self.name, error)
        try:
            self._put_json(".failed.json", {
                "role": self.role, "node": self.name, "cluster": self.config["cluster"],
                "stack": self.config["stack"], "error": error, "time": time.time(),
            })
        except Exception as exc:  # noqa: BLE001
            LOG.error("cannot write %s.failed.json: %s", self.status_prefix, exc)
        self.upload_log()
        self.power_off()

    def power_off(self) -> None:
        if self.config.get("poweroff_on_exit") and not self.stopping:
            command = self.config["poweroff_command"]
            LOG.info("powering off (%s), so this node stops billing", " ".join(command))
            subprocess.run(command, check=False)

    # secrets
    def fetch_secrets(self) -> tuple[dict[str, str], dict[str, str]]:
        """``(tls_files, env)``: the TLS files written 0600 under ``state_dir/secrets``, and the delivered secrets."""
        refs: dict[str, str] = self.config["secret_refs"]
        secrets_dir = self.state_dir / "secrets"
        secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(secrets_dir, 0o700)
        tls_files, env = {}, {}
        for key, ref in refs.items():
            try:
                value = self.stores.secret(ref)
            except Exception as exc:  # noqa: BLE001 - any store error is reported with the ref that caused it
                raise RuntimeError(
                    f"cannot read secret {key!r} (ref {ref!r}) from the {self.config['cloud']} secret store: "
                    f"{type(exc).__name__}: {str(exc).rstrip('.')}. Check that the secret exists and that the "
                    f"node's role may read it."
                ) from None
            self.masked.append(value)
            if key in TLS_KEYS:
                path = secrets_dir / f"{key[4:]}.pem"
                _write_private(path, value)
                tls_files[key] = str(path)
            elif key.startswith(SECRET_PREFIX):
                env[key[len(SECRET_PREFIX):]] = value
        missing = [k for k in TLS_KEYS if k not in tls_files]
        if missing:
            raise RuntimeError(f"the config has no secret ref for {', '.join(missing)}: the node cannot speak TLS")
        LOG.info("fetched %d secrets (%s)", len(refs), ", ".join(sorted(refs)))
        return tls_files, env

    # dask
    def _argv(self, tls_files: dict[str, str]) -> tuple[list[str], Path]:
        from rh_iac.tls import ClusterTLS
        from runtime.dask_node import scheduler_argv, worker_argv

        c = self.config
        cert, key = tls_files["tls_cert"], tls_files["tls_key"]
        tls = ClusterTLS(ca_file=tls_files["tls_ca"], scheduler_cert=cert, scheduler_key=key, worker_cert=cert,
                         worker_key=key, client_cert=cert, client_key=key)
        self.security = tls.security("client")  # the role's certificate, used to check the node answers
        if self.role == "scheduler":
            host = c.get("host") or "0.0.0.0"
            scheduler_file = self.state_dir / "scheduler.json"
            scheduler_file.unlink(missing_ok=True)
            idle = c.get("idle_timeout_s")
            argv = scheduler_argv(sys.executable, tls, host, int(c["scheduler_port"]), f"{host}:{c['dashboard_port']}",
                                  scheduler_file, None if idle is None else int(idle))
            return argv, scheduler_file
        from distributed.utils import get_ip

        scheduler = c["scheduler_address"]
        host = c.get("host") or get_ip(urllib.parse.urlparse(scheduler).hostname or "8.8.8.8")
        argv = worker_argv(sys.executable, tls, scheduler, host, int(c["threads_per_worker"]), c["memory_limit"],
                           self.worker_name, int(c["death_timeout_s"]), self.state_dir / "dask-worker-space")
        return argv, self.state_dir / "scheduler.json"

    @property
    def worker_name(self) -> str:
        return f"{self.config['cluster']}-{self.name}"

    def _answers(self, address: str) -> bool:
        """Whether the scheduler at ``address`` answers over TLS (and, for a worker, lists this worker)."""
        from distributed import Client

        try:
            with Client(address, security=self.security, timeout=5) as client:
                if self.role == "scheduler":
                    return True
                workers = client.scheduler_info(n_workers=-1)["workers"].values()
                return any(w.get("name") == self.worker_name for w in workers)
        except (OSError, TimeoutError):
            return False

    def wait_up(self, scheduler_file: Path) -> str:
        """Block until the started Dask process is up; its scheduler's address."""
        deadline = time.monotonic() + float(self.config["ready_timeout_s"])
        while True:
            code = self.proc.poll() if self.proc is not None else None
            if code is not None:
                raise RuntimeError(f"the dask {self.role} exited with code {code} before it was up "
                                   f"(its output is in this log above)")
            address = self.config.get("scheduler_address")
            if self.role == "scheduler":
                try:
                    address = json.loads(scheduler_file.read_text())["address"]
                except (OSError, ValueError, KeyError):  # not written yet, or half-written
                    address = None
            if address and self._answers(address):
                return address
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dask {self.role} did not come up within {self.config['ready_timeout_s']} s")
            time.sleep(0.5)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        LOG.info("signal %d: stopping the dask %s", signum, self.role)
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def run(self) -> int:
        """Boot the node; returns the Dask process's exit code (1 if the boot failed)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        marker_file = self.state_dir / "ready.json"
        marker_file.unlink(missing_ok=True)
        try:
            tls_files, secret_env = self.fetch_secrets()
            argv, scheduler_file = self._argv(tls_files)
            env = {**os.environ, **self.config.get("env_vars", {}), **secret_env}
            if self.stopping:  # told to stop while fetching the secrets
                return 1
            LOG.info("starting the dask %s: %s", self.role, " ".join(argv))
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
            address = self.wait_up(scheduler_file)
        except Exception as exc:  # noqa: BLE001 - every boot failure is reported the same way
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                self.proc.wait(timeout=30)
            if not self.stopping:
                self.fail(str(exc))
            return 1

        from rh_iac.versions import local_versions

        marker = {
            "role": self.role, "node": self.name, "cluster": self.config["cluster"], "stack": self.config["stack"],
            "address": address, "versions": local_versions(), "pid": self.proc.pid, "time": time.time(),
        }
        if self.role == "worker":
            marker["worker_name"] = self.worker_name
        marker_file.write_text(json.dumps(marker, indent=2))
        self._put_json(".ready.json", marker)
        LOG.info("%s %s is ready at %s", self.role, self.name, address)
        self.upload_log()

        code = self.proc.wait()
        LOG.info("the dask %s exited with code %s", self.role, code)
        marker_file.unlink(missing_ok=True)
        try:
            self.stores.delete(self.status_prefix + ".ready.json")
        except Exception as exc:  # noqa: BLE001
            LOG.error("cannot remove %s.ready.json: %s", self.status_prefix, exc)
        self.upload_log()
        self.power_off()
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="node_agent", description="rh_iac's node agent: boot a Dask node.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="boot the node").add_argument("config", type=Path)
    report = commands.add_parser("report", help="report a failed bootstrap step")
    report.add_argument("config", type=Path)
    report.add_argument("--exit-code", type=int, default=1, help="the failed step's exit code")
    fetch = commands.add_parser("fetch", help="download an object of the cloud's store (e.g. the rh_iac wheel)")
    fetch.add_argument("config", type=Path)
    fetch.add_argument("url")
    fetch.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s rh_iac-agent %(levelname)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)  # its INFO lines (credential discovery) are noise here
    node = Node(json.loads(args.config.read_text()))
    if args.command == "fetch":
        args.dest.parent.mkdir(parents=True, exist_ok=True)
        args.dest.write_bytes(node.stores.get(args.url))
        LOG.info("fetched %s to %s", args.url, args.dest)
        return 0
    if args.command == "report":
        node.fail(f"the bootstrap script failed with exit code {args.exit_code} before the node agent ran "
                  f"(the failing step is at the end of this log)")
        return args.exit_code
    return node.run()


if __name__ == "__main__":
    sys.exit(main())
