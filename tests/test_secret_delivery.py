"""Secrets delivered to a cluster's workers: ``Secret(...).to(cluster, as_env=..., as_file=...)``.

Against the ``cluster`` fixture (a real mutual-TLS LocalCluster, 2 worker processes): a local-store secret and a Vault
secret reach every worker as an environment variable and as a 0600 file; re-delivery replaces; revoke removes;
restarted workers get the delivery again. End to end on the real deployed local stack: the canary secret reaches a
worker from a fresh process and appears nowhere in the project (git, RNS, Terraform state, logs), in preview/status
output, or in the workers' command lines and start environments.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vault_server  # noqa: E402
from conftest import CANARY, recorded_pids  # noqa: E402

from rh_iac import Secret, Stack  # noqa: E402
from rh_iac.errors import (  # noqa: E402
    DeclarationError,
    ResourceNotDeployedError,
    SecretDeliveryError,
    UnknownSecretProviderError,
    UnknownSecretStoreError,
    VaultPermissionError,
)
from rh_iac.project import Project  # noqa: E402
from rh_iac.providers.local.secret import store_for  # noqa: E402
from rh_iac.secrets.delivery import SecretPlugin, plugin_name  # noqa: E402


# --- helpers run on the workers (module-level: pickled by reference, the workers import this module's deps) -------
def _probe(var: str, name: str, file: str | None, dask_worker=None):
    import os
    import stat

    from rh_iac.secrets.delivery import secret_file

    out = {"pid": os.getpid(), "env": os.environ.get(var), "local_directory": dask_worker.local_directory}
    if file is not None:
        path = secret_file(name, file, worker=dask_worker)
        out["path"] = path
        if os.path.exists(path):
            out["file"] = open(path).read()
            out["mode"] = stat.S_IMODE(os.stat(path).st_mode)
            out["dir_mode"] = stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
            out["top_mode"] = stat.S_IMODE(os.stat(os.path.dirname(os.path.dirname(path))).st_mode)
        else:
            out["file"] = None
    return out


def _run(client, var: str, name: str, file: str | None = None) -> dict:
    return client.run(_probe, var, name, file)


@pytest.fixture
def local_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A project folder (stacks/) with its own RH_IAC_HOME, so the local store's key is a throwaway one."""
    (tmp_path / "proj" / "stacks").mkdir(parents=True)
    monkeypatch.setenv("RH_IAC_HOME", str(tmp_path / "home"))
    return Project(tmp_path / "proj")


def _declare(name: str, **kwargs) -> Secret:
    with Stack("local", provider="local"):
        return Secret(name, **kwargs)


@pytest.fixture
def client(cluster):
    client = cluster.client()
    assert len(client.scheduler_info()["workers"]) == 2
    return client


# --- local store -----------------------------------------------------------------------------------------------------
def test_local_secret_reaches_every_worker_as_env_and_0600_file(cluster, client, local_project):
    value = "local-value-1b9e2d"
    secret = _declare("api-token", generate=True)
    store_for(local_project.state_dir("local")).put("api-token", value)

    delivery = secret.to(cluster, as_env="API_TOKEN", as_file="token", project=local_project)
    try:
        seen = _run(client, "API_TOKEN", "api-token", "token")
        assert len(seen) == 2 and len({r["pid"] for r in seen.values()}) == 2
        for addr, r in seen.items():
            assert r["env"] == value
            assert r["file"] == value
            assert r["mode"] == 0o600 and r["dir_mode"] == 0o700 and r["top_mode"] == 0o700
            assert r["path"].startswith(r["local_directory"])
            assert delivery.path[addr] == r["path"]  # the paths deliver() reports are the ones workers see
        assert delivery.env == ("API_TOKEN",) and delivery.plugin == plugin_name("api-token")
        assert value not in repr(delivery)
        # the client process itself got nothing
        assert "API_TOKEN" not in os.environ
    finally:
        assert secret.revoke(cluster)
    gone = _run(client, "API_TOKEN", "api-token", "token")
    assert all(r["env"] is None and r["file"] is None for r in gone.values()), gone
    assert not secret.revoke(cluster)  # nothing left to revoke


def test_default_env_name_and_redelivery_replaces(cluster, client, local_project):
    secret = _declare("demo-key", generate=True)
    store = store_for(local_project.state_dir("local"))
    store.put("demo-key", "first-value")
    secret.to(cluster, project=local_project)  # default: as_env=DEMO_KEY
    try:
        assert {r["env"] for r in _run(client, "DEMO_KEY", "demo-key").values()} == {"first-value"}

        store.put("demo-key", "second-value")
        secret.to(cluster, as_env="OTHER_KEY", as_file="k", project=local_project)
        seen = _run(client, "OTHER_KEY", "demo-key", "k")
        assert {r["env"] for r in seen.values()} == {"second-value"}
        assert {r["file"] for r in seen.values()} == {"second-value"}
        # the first delivery was torn down, not left beside the second
        assert {r["env"] for r in _run(client, "DEMO_KEY", "demo-key").values()} == {None}
        registered = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.worker_plugins))
        assert registered.count(plugin_name("demo-key")) == 1

        secret.to(cluster, as_env="OTHER_KEY", project=local_project)  # now without the file
        assert {r["file"] for r in _run(client, "OTHER_KEY", "demo-key", "k").values()} == {None}
    finally:
        secret.revoke(cluster)


def test_restarted_workers_get_the_delivery_again(cluster, client, local_project):
    secret = _declare("replayed", generate=True)
    store_for(local_project.state_dir("local")).put("replayed", "replay-value")
    secret.to(cluster, as_env="REPLAYED", as_file="f", project=local_project)
    try:
        before = {r["pid"] for r in _run(client, "REPLAYED", "replayed").values()}
        client.restart(wait_for_workers=True)
        client.wait_for_workers(2, timeout=60)
        after = _run(client, "REPLAYED", "replayed", "f")
        assert {r["pid"] for r in after.values()}.isdisjoint(before)  # new worker processes
        assert {r["env"] for r in after.values()} == {"replay-value"}
        assert {r["file"] for r in after.values()} == {"replay-value"}
    finally:
        secret.revoke(cluster)


def test_plugin_repr_and_pickle_hold_no_value_in_text():
    plugin = SecretPlugin("x", {"value": "plugin-secret-42"}, {"value": "X"}, {"value": "x"})
    assert "plugin-secret-42" not in repr(plugin) and "plugin-secret-42" not in str(plugin)
    assert plugin.name == "rh-iac-secret-x"
    clone = pickle.loads(pickle.dumps(plugin))  # what travels (over TLS only) to the scheduler and workers
    assert clone._values == {"value": "plugin-secret-42"}


def test_value_of_an_undeployed_secret_is_a_specific_error(local_project):
    secret = Secret("never-deployed", generate=True)  # free-standing, no RNS record
    with pytest.raises(ResourceNotDeployedError, match="never-deployed"):
        secret.value(local_project)


# --- vault -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vault():
    server = vault_server.start()
    try:
        yield server
    finally:
        server.stop()


def test_vault_secret_delivered(cluster, client, vault, monkeypatch):
    from rh_iac.secrets.vault import VaultSecretStore

    VaultSecretStore(url=vault.url, token=vault.token, mount="secret", path="team/ml").put("hf-token", "vault-v1")
    monkeypatch.setenv("VAULT_TOKEN", vault.token)
    secret = Secret("hf-token", store="vault", vault_url=vault.url, vault_mount="secret", vault_path="team/ml")
    assert secret.spec() == {"from_env": None, "generate": False, "store": "vault", "vault_mount": "secret",
                             "vault_path": "team/ml", "vault_url": vault.url}
    assert vault.token not in json.dumps(secret.spec())
    secret.to(cluster, as_env="HF_TOKEN", as_file="hf")
    try:
        seen = _run(client, "HF_TOKEN", "hf-token", "hf")
        assert {r["env"] for r in seen.values()} == {"vault-v1"}
        assert {(r["file"], r["mode"]) for r in seen.values()} == {("vault-v1", 0o600)}

        VaultSecretStore(url=vault.url, token=vault.token, mount="secret", path="team/ml").put("hf-token", "vault-v2")
        secret.to(cluster, as_env="HF_TOKEN")
        assert {r["env"] for r in _run(client, "HF_TOKEN", "hf-token").values()} == {"vault-v2"}
    finally:
        secret.revoke(cluster)

    monkeypatch.setenv("VAULT_TOKEN", "hvs.wrong")
    with pytest.raises(VaultPermissionError, match="hf-token"):
        secret.to(cluster, as_env="HF_TOKEN")


# --- bad input -------------------------------------------------------------------------------------------------------
def test_unknown_store_is_a_specific_declaration_error():
    with pytest.raises(UnknownSecretStoreError) as info:
        with Stack("s", provider="local"):
            Secret("my-token", generate=True, store="aws-secrets-manager")
    message = str(info.value)
    assert "Secret 'my-token'" in message and "'aws-secrets-manager'" in message and "local, vault" in message
    assert isinstance(info.value, UnknownSecretProviderError) and isinstance(info.value, DeclarationError)


def test_bad_store_options_and_delivery_arguments(cluster):
    with pytest.raises(DeclarationError, match="only apply to store='vault'"):
        Secret("a", generate=True, vault_path="x")
    with pytest.raises(DeclarationError, match="vault_mount"):
        Secret("a", store="vault", vault_mount="../etc")
    with pytest.raises(DeclarationError, match="credentials"):
        Secret("a", store="vault", vault_url="https://user:pw@vault:8200")
    from rh_iac.secrets.delivery import deliver

    with pytest.raises(SecretDeliveryError, match="holds 2 values"):
        deliver({"A": "1", "B": "2"}, cluster, as_env="ONE", name="pair")
    with pytest.raises(SecretDeliveryError, match="not a valid environment variable"):
        deliver({"value": "1"}, cluster, as_env="1BAD", name="x")
    with pytest.raises(SecretDeliveryError, match="file name"):
        deliver({"value": "1"}, cluster, as_file="../escape", name="x")
    with pytest.raises(SecretDeliveryError, match="as_env=..., as_file="):
        deliver({"value": "1"}, cluster, name="x")


def test_unknown_provider_secret_is_a_specific_error():
    with pytest.raises(UnknownSecretProviderError, match="'vaultz'"):
        Secret.from_provider("vaultz")


# --- provider secrets ------------------------------------------------------------------------------------------------
def test_provider_secret_delivered_under_its_variable_names(cluster, client, tmp_path):
    creds = Secret.from_provider("aws", name="aws-creds", home=tmp_path,
                                 environ={"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t-aws"})
    assert "s3cr3t-aws" not in repr(creds) and creds.keys == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(creds)
    delivery = creds.to(cluster, as_file="aws")  # as_file only: a folder with one 0600 file per key
    try:
        seen = _run(client, "AWS_SECRET_ACCESS_KEY", "aws-creds", "aws/AWS_SECRET_ACCESS_KEY")
        assert {(r["file"], r["mode"], r["env"]) for r in seen.values()} == {("s3cr3t-aws", 0o600, None)}
        assert all(len(paths) == 2 for paths in delivery.files.values())
        creds.to(cluster)  # default: as environment variables named like the keys
        seen = _run(client, "AWS_SECRET_ACCESS_KEY", "aws-creds", "aws/AWS_SECRET_ACCESS_KEY")
        assert {(r["env"], r["file"]) for r in seen.values()} == {("s3cr3t-aws", None)}
        assert {r["env"] for r in _run(client, "AWS_ACCESS_KEY_ID", "aws-creds").values()} == {"AKIAEXAMPLE"}
    finally:
        creds.revoke(cluster)


# --- end to end on the deployed local stack --------------------------------------------------------------------------
_E2E = """
import hashlib, json, os
import rh_iac

def probe():
    import hashlib, os
    return [os.getpid(), hashlib.sha256(os.environ.get("DEMO_TOKEN", "").encode()).hexdigest()]

secret, cluster = rh_iac.load("demo-token"), rh_iac.load("dev-cluster")
secret.to(cluster, as_env="DEMO_TOKEN")
print(json.dumps(cluster.client().run(probe)))
"""


def _descendants(pids: list[int]) -> set[int]:
    """``pids`` and every process below them (a worker may run its code in child processes)."""
    parents: dict[int, int] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat_file.parent.name)] = int(fields[1])
    found, frontier = set(pids), set(pids)
    while frontier:
        frontier = {p for p, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def test_canary_reaches_a_worker_and_appears_nowhere_else(deployed_project):
    proj = deployed_project
    canary = CANARY.encode()
    proc = proj.python(_E2E)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(seen) == 2
    assert {h for _, h in seen.values()} == {hashlib.sha256(canary).hexdigest()}
    leaked = CANARY in proc.stdout + proc.stderr
    assert not leaked, "canary in the client process's output"

    # the project: RNS records, Terraform state, logs, stack files, git objects on disk (all as bytes)
    checked = []
    for root in (proj.root, proj.home):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                leaked = canary in path.read_bytes()  # a bool, so a failure does not print the file's bytes
                assert not leaked, f"canary found in {path}"
                checked.append(path)
    names = {p.name for p in checked}
    assert any(p.suffix == ".json" and "rns" in p.parts for p in checked)  # the checks looked at the real thing
    assert any(n.endswith(".tfstate") for n in names) and any(n.startswith("worker-") and n.endswith(".log")
                                                              for n in names)
    assert any(p.suffix == ".secret" for p in checked)  # the value is stored, but only encrypted
    logs = {p.name: p.read_text(errors="replace") for p in checked if p.suffix == ".log"}
    # the delivery did reach these logs, by plugin name only (so the canary check above covered the real records)
    assert f"Starting Worker plugin {plugin_name('demo-token')}" in "".join(
        text for name, text in logs.items() if name.startswith("worker-"))
    assert f"Registering Worker plugin {plugin_name('demo-token')}" in logs.get("scheduler.log", "")

    # git history (every ref, every diff)
    leaked = CANARY in proj.git("log", "-p", "--all")
    assert not leaked, "canary in git history"

    # plan and status output
    for task in ("preview", "status"):
        out = proj.invoke(task)
        leaked = CANARY in out.stdout + out.stderr
        assert not leaked, f"canary in `invoke {task}` output"

    # the workers' command lines and start environments (os.environ is changed in-process after start; those
    # changes do not show in /proc/<pid>/environ, which is the environment the process was started with)
    worker_pids = {int(pid) for pid, _ in seen.values()}
    pids = _descendants(recorded_pids(proj.root))
    assert worker_pids <= pids
    for pid in pids:
        for what in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{pid}/{what}").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue
            leaked = canary in data
            assert not leaked, f"canary in /proc/{pid}/{what}"
    # and no process on the machine carries it on its command line
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            leaked = canary in cmdline.read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        assert not leaked, f"canary in {cmdline}"

    # a second, fresh process sees the delivery too (the scheduler keeps it): delivered once, visible to any client
    again = proj.python(
        "import json, os, rh_iac\n"
        "def probe():\n    import hashlib, os\n"
        "    return hashlib.sha256(os.environ.get('DEMO_TOKEN', '').encode()).hexdigest()\n"
        "print(json.dumps(rh_iac.load('dev-cluster').client().run(probe)))\n"
    )
    assert set(json.loads(again.stdout.strip().splitlines()[-1]).values()) == {hashlib.sha256(canary).hexdigest()}


def _block_files_folder(dask_worker=None, undo: bool = False):
    import os

    path = os.path.join(dask_worker.local_directory, "rh_iac-secrets", "blocked")
    if undo:
        os.unlink(path)
    else:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        open(path, "w").close()  # a file where the secret's folder goes: the plugin's setup cannot write
    return path


def test_failed_delivery_is_taken_back_and_names_the_secret(cluster, client):
    from rh_iac.secrets.delivery import deliver

    client.run(_block_files_folder)
    try:
        with pytest.raises(SecretDeliveryError, match="Secret 'blocked'") as info:
            deliver({"value": "blocked-value-77"}, cluster, as_env="BLOCKED", as_file="f", name="blocked")
        assert "blocked-value-77" not in str(info.value)
        registered = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.worker_plugins))
        assert plugin_name("blocked") not in registered  # not replayed to later workers
        assert {r["env"] for r in _run(client, "BLOCKED", "blocked").values()} == {None}  # nor left half-applied
    finally:
        client.run(_block_files_folder, undo=True)
