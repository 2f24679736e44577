"""The cloud-init user-data that boots a cloud instance into a Dask scheduler or worker, holding references only.

Providers put ``user_data(NodeConfig(...))`` on each instance (EC2 ``user_data``, GCE ``startup-script``). The script
logs everything to ``/var/log/rh_iac-bootstrap.log`` (and the console), makes a Python ``major.minor`` equal to the
client's with uv in ``/opt/rh_iac/venv``, installs there the client's exact versions of the packages that must match
(:data:`PINNED`, plus rh_iac itself), the Env's packages and what the node agent needs, runs the Env's setup
commands, writes the node agent (:mod:`runtime.node_agent`, gzip+base64) and its JSON config, and runs it. The agent
fetches the TLS material and the delivered secrets from the cloud's secret store at boot, so the user-data (readable
by anyone with instance-metadata access, and limited to 16 KB) never contains a secret or a key. When a step fails
before the agent runs, the agent's ``report`` command uploads the log tail to the status URL.

rh_iac itself is installed from ``NodeConfig.rh_iac_requirement``: by default ``rh_iac==<this client's version>``
from the package index; for an unpublished version, upload :func:`source_archive` to the stack's bucket and pass its
``s3://`` / ``gs://`` URL, which the node fetches with its own identity.

Where systemd runs, the agent becomes the ``rh_iac-node`` service, so a node stopped when idle boots into Dask again
when it is started (EC2 runs user-data only on an instance's first boot). The output is deterministic (sorted JSON,
gzip without a timestamp): the same config gives the same user-data, so a redeploy does not replace instances.
"""

from __future__ import annotations

import ast
import base64
import gzip
import json
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from rh_iac.errors import NodeConfigError
from runtime.node_agent import SECRET_PREFIX, TLS_KEYS

ROOT = "/opt/rh_iac"
LOG_FILE = "/var/log/rh_iac-bootstrap.log"
STATE_DIR = "/var/lib/rh_iac"
USER_DATA_LIMIT = 16384  # bytes: EC2's limit (GCE's metadata values allow more)

#: distributions installed on every node at exactly the client's version when the client has them: what pickles,
#: the wire protocol and dataframes depend on (rh_iac.versions checks rh_iac/dask/distributed/cloudpickle at connect)
PINNED = ("dask", "distributed", "cloudpickle", "msgpack", "toolz", "tornado", "numpy", "pandas", "pyarrow", "fsspec",
          "bokeh")
#: per cloud: its fsspec implementation (pinned when the client has it) and what the node agent needs (boto3 on aws;
#: on gcp the agent uses the metadata server and REST APIs through urllib)
CLOUD_PACKAGES = {"aws": ("s3fs", "boto3"), "gcp": ("gcsfs",)}
STATUS_SCHEMES = {"aws": "s3://", "gcp": "gs://"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ARCHIVE = re.compile(r"^[A-Za-z0-9._+-]+\.(whl|tar\.gz)$")
_KEY_MATERIAL = re.compile(r"-----BEGIN [A-Z ]*-----|PRIVATE KEY")


def _client_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _client_rh_iac() -> str:
    from rh_iac.versions import local_versions

    return f"rh_iac=={local_versions()['rh_iac']}"


@dataclass(frozen=True)
class NodeConfig:
    """What one cloud node needs to boot: references to its secrets, never their values.

    ``secret_refs`` maps ``"tls_ca"``, ``"tls_cert"``, ``"tls_key"`` (this role's certificate) and
    ``"secret:<NAME>"`` (a user secret delivered to the Dask process as environment variable ``NAME``) to an AWS
    Secrets Manager id/ARN or a GCP Secret Manager resource name. ``status_url`` is the object-store prefix
    (``s3://bucket/.rh_iac/<cluster>/`` or ``gs://...``) where the node writes its readiness marker and log tail.
    """

    cloud: str
    role: str
    stack: str
    cluster: str
    region: str
    secret_refs: dict[str, str]
    status_url: str
    packages: tuple[str, ...] = ()
    env_vars: dict[str, str] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    scheduler_address: str | None = None  # workers: "tls://<ip>:8786"
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    idle_timeout_s: float | None = None  # the scheduler stops after this long without work (autostop); None = never
    death_timeout_s: float = 600  # a worker stops after this long without its scheduler
    host: str | None = None  # interface to bind: scheduler default 0.0.0.0, worker default the one facing the scheduler
    scheduler_port: int = 8786
    dashboard_port: int = 8787
    node_name: str | None = None  # default: the host name
    python: str = field(default_factory=_client_python)  # major.minor, the client's by default
    rh_iac_requirement: str = field(default_factory=_client_rh_iac)  # pip requirement, or s3:// / gs:// archive URL
    poweroff_on_exit: bool = True  # power the node off when Dask exits (idle or orphaned) or the boot fails
    poweroff_command: tuple[str, ...] = ("shutdown", "-h", "now")
    ready_timeout_s: float = 600
    state_dir: str = STATE_DIR
    log_file: str = LOG_FILE

    def __post_init__(self) -> None:
        object.__setattr__(self, "packages", tuple(self.packages))
        object.__setattr__(self, "setup", tuple(self.setup))
        object.__setattr__(self, "poweroff_command", tuple(self.poweroff_command))
        label = f"{self.role} node of cluster {self.cluster!r} (stack {self.stack!r})"
        if self.cloud not in STATUS_SCHEMES:
            raise NodeConfigError(f"{label}: cloud {self.cloud!r} is not one of {sorted(STATUS_SCHEMES)}.")
        if self.role not in ("scheduler", "worker"):
            raise NodeConfigError(f"{label}: role must be 'scheduler' or 'worker', not {self.role!r}.")
        scheme = STATUS_SCHEMES[self.cloud]
        if not self.status_url.startswith(scheme) or len(self.status_url) <= len(scheme):
            raise NodeConfigError(f"{label}: status_url {self.status_url!r} must be a {scheme}bucket/prefix/ URL of "
                                  f"the stack's bucket (where the node writes its readiness marker).")
        if self.role == "worker" and not re.match(r"^tls://[^:/]+:\d+$", self.scheduler_address or ""):
            raise NodeConfigError(f"{label}: scheduler_address must be 'tls://<ip>:<port>' (got "
                                  f"{self.scheduler_address!r}): workers speak TLS only.")
        missing = [k for k in TLS_KEYS if not self.secret_refs.get(k)]
        if missing:
            raise NodeConfigError(f"{label}: secret_refs lacks {', '.join(missing)}: store the cluster's TLS material "
                                  f"in the secret store and pass its refs (never the PEM itself).")
        for key in self.secret_refs:
            name = key[len(SECRET_PREFIX):]
            if key not in TLS_KEYS and not (key.startswith(SECRET_PREFIX) and _ENV_NAME.match(name)):
                raise NodeConfigError(f"{label}: secret_refs key {key!r} must be one of {', '.join(TLS_KEYS)} or "
                                      f"'secret:<ENV_VAR_NAME>'.")
        for name in self.env_vars:
            if not _ENV_NAME.match(name):
                raise NodeConfigError(f"{label}: env_vars name {name!r} is not a valid environment variable name.")
        fields = {"secret_refs": self.secret_refs.values(), "env_vars": self.env_vars.values(),
                  "setup": self.setup, "packages": self.packages}
        for name, values in fields.items():
            if any(_KEY_MATERIAL.search(str(v)) for v in values):
                raise NodeConfigError(f"{label}: {name} contains key material (a PEM block): user-data is readable "
                                      f"from the instance metadata. Store it as a Secret and pass its ref instead.")
        archive = self.rh_iac_requirement.rsplit("/", 1)[-1]
        if self.rh_iac_requirement.startswith(tuple(STATUS_SCHEMES.values())) and not (
                self.rh_iac_requirement.startswith(scheme) and _ARCHIVE.match(archive)):
            raise NodeConfigError(f"{label}: rh_iac_requirement {self.rh_iac_requirement!r} must be a {scheme}... URL "
                                  f"of a .whl or .tar.gz on the stack's bucket (see source_archive()), or a pip "
                                  f"requirement.")
        if not re.match(r"^3\.\d+$", self.python):
            raise NodeConfigError(f"{label}: python must be a major.minor version such as '3.11', not {self.python!r}.")
        if self.death_timeout_s <= 0 or (self.idle_timeout_s is not None and self.idle_timeout_s <= 0):
            raise NodeConfigError(f"{label}: death_timeout_s and idle_timeout_s must be positive seconds (or "
                                  f"idle_timeout_s=None for a scheduler that never stops).")
        if int(self.threads_per_worker) != self.threads_per_worker or self.threads_per_worker < 1:
            raise NodeConfigError(f"{label}: threads_per_worker must be a positive integer, not "
                                  f"{self.threads_per_worker!r}.")

    def to_json(self) -> str:
        """The agent's config file: every field (none holds a secret) but ``packages`` and ``setup``, which the
        script itself carries; sorted, for a stable user-data."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("packages", "setup")}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def node_requirements(config: NodeConfig) -> list[str]:
    """The pip requirements of the node's venv: the client's exact versions of :data:`PINNED` and of the cloud's
    packages (unpinned when the client lacks them; what the agent needs is always there), then the Env's packages."""
    out = []
    for name in (*PINNED, *CLOUD_PACKAGES[config.cloud]):
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            if name == "boto3":
                out.append(name)
    return out + list(config.packages)


def agent_source() -> str:
    """:mod:`runtime.node_agent` as the node gets it: the same code without its docstrings (user-data is scarce)."""
    tree = ast.parse(Path(__file__).with_name("node_agent.py").read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def _agent_blob() -> str:
    return base64.encodebytes(gzip.compress(agent_source().encode(), compresslevel=9, mtime=0)).decode()


def _heredoc(text: str, path: str, tag: str) -> str:
    if any(line.strip() == tag for line in text.splitlines()):
        raise NodeConfigError(f"a value of the node config contains the line {tag!r}, which ends the script's "
                              f"here-document: remove it.")
    return f"cat > {path} <<'{tag}'\n{text.rstrip()}\n{tag}\n"


def user_data(config: NodeConfig) -> str:
    """The bootstrap script (``#!/bin/bash``) for one node; deterministic, under 16 KB, without secret values.

    Raises :class:`~rh_iac.errors.NodeConfigError` when it would exceed EC2's 16 KB limit (too many packages or
    setup commands: move them into an image or a requirements file on the bucket).
    """
    tools_packages = "uv boto3" if config.cloud == "aws" else "uv"
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(config.env_vars.items()))
    setup = "".join(f"{command}\n" for command in config.setup)
    log = shlex.quote(config.log_file)
    requirement = shlex.quote(config.rh_iac_requirement)
    rh_iac_install = ""
    if config.rh_iac_requirement.startswith(STATUS_SCHEMES[config.cloud]):  # an archive on the stack's bucket
        local = f'"$R/dist/{config.rh_iac_requirement.rsplit("/", 1)[-1]}"'
        rh_iac_install = f'"$PY" "$R/node_agent.py" fetch "$R/node.json" {requirement} {local}\n'
        requirement = local
    rh_iac_install += f'"$R/tools/bin/uv" pip install --python "$R/venv/bin/python" --no-deps {requirement}\n'
    script = f"""#!/bin/bash
# rh_iac bootstrap: the {config.role} of cluster {config.cluster} (stack {config.stack}). Holds references only:
# the node agent fetches TLS material and secrets from the secret store with the instance's identity.
set -euo pipefail
R="${{RH_IAC_ROOT:-{ROOT}}}"  # RH_IAC_ROOT: only for running this script off a cloud node
mkdir -p "$R" "$(dirname {log})"
exec > >(tee -a {log}) 2>&1
echo "rh_iac bootstrap of the {config.role} starts at $(date -u +%FT%TZ)"
export HOME="${{HOME:-/root}}" UV_CACHE_DIR="$R/uv-cache" UV_PYTHON_INSTALL_DIR="$R/python"
PY=python3
trap 'rc=$?; [ $rc -eq 0 ] || "$PY" "$R/node_agent.py" report "$R/node.json" --exit-code $rc || true' EXIT
base64 -d > "$R/node_agent.py.gz" <<'RH_IAC_AGENT'
{_agent_blob().rstrip()}
RH_IAC_AGENT
gunzip -f "$R/node_agent.py.gz"
{_heredoc(config.to_json(), '"$R/node.json"', "RH_IAC_CONFIG")}\
{_heredoc(chr(10).join(node_requirements(config)), '"$R/requirements.txt"', "RH_IAC_REQUIREMENTS")}\
echo "rh_iac: python {config.python}, the client's pinned versions and {len(config.packages)} Env packages"
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  if command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -yq python3 python3-venv
  elif command -v dnf >/dev/null; then dnf install -yq python3
  else yum install -yq python3; fi
fi
[ -x "$R/tools/bin/uv" ] || {{ python3 -m venv "$R/tools" && "$R/tools/bin/pip" install -q {tools_packages}; }}
PY="$R/tools/bin/python"
"$R/tools/bin/uv" venv --allow-existing --python {config.python} "$R/venv"
"$R/tools/bin/uv" pip install --python "$R/venv/bin/python" -r "$R/requirements.txt"
{rh_iac_install}export PATH="$R/venv/bin:$PATH"
{exports}echo "rh_iac: {len(config.setup)} setup commands"
set -x
{setup}set +x
trap - EXIT
AGENT="$R/venv/bin/python $R/node_agent.py run $R/node.json"
if [ -z "${{RH_IAC_ROOT:-}}" ] && [ -d /run/systemd/system ]; then  # a service: the node boots again after a stop
  cat > /etc/systemd/system/rh_iac-node.service <<RH_IAC_UNIT
[Unit]
Description=rh_iac Dask {config.role} of cluster {config.cluster}
Wants=network-online.target
After=network-online.target
[Service]
ExecStart=$AGENT
StandardOutput=append:{config.log_file}
StandardError=append:{config.log_file}
[Install]
WantedBy=multi-user.target
RH_IAC_UNIT
  systemctl daemon-reload && systemctl enable rh_iac-node.service
  exec systemctl start --no-block rh_iac-node.service  # --no-block: no wait on the boot that runs this script
fi
exec $AGENT
"""
    size = len(script.encode())
    if size >= USER_DATA_LIMIT:
        raise NodeConfigError(f"the {config.role} user-data of cluster {config.cluster!r} is {size} bytes, over the "
                              f"{USER_DATA_LIMIT}-byte limit: move packages or setup commands into a requirements "
                              f"file or an image.")
    return script


def source_archive(dest_dir: str | Path) -> Path:
    """``dest_dir/rh_iac-<version>.tar.gz``: the source of the rh_iac this client runs, for nodes to install.

    Upload it to the stack's bucket and pass its URL as ``NodeConfig.rh_iac_requirement``: the node fetches it with
    its own identity and installs it (building it there), so nodes run this client's exact rh_iac even when that
    version is not published. Raises :class:`~rh_iac.errors.NodeConfigError` when rh_iac is not installed from a
    source tree (then its published version, the default requirement, is the one to use).
    """
    import tarfile

    import rh_iac
    from rh_iac.versions import local_versions

    root = Path(rh_iac.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise NodeConfigError(f"rh_iac at {root} is not a source tree (no pyproject.toml): keep the default "
                              f"rh_iac_requirement 'rh_iac=={local_versions()['rh_iac']}'.")
    name = f"rh_iac-{local_versions()['rh_iac']}"
    dest = Path(dest_dir) / f"{name}.tar.gz"
    dest.parent.mkdir(parents=True, exist_ok=True)

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if "__pycache__" in info.name or info.name.endswith(".pyc"):
            return None
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""  # the same source, the same bytes
        return info

    with gzip.GzipFile(dest, "wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for part in ("pyproject.toml", "README.md", "rh_iac", "runtime"):
            if (root / part).exists():
                tar.add(root / part, arcname=f"{name}/{part}", filter=keep)
    return dest
