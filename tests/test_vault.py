"""VaultSecretStore over Vault KV v2 through hvac: versions, check-and-set, errors, and no value in any message.

The tests run against the small KV v2 server in ``tests/vault_server.py``, or against a real Vault when VAULT_ADDR and
VAULT_TOKEN are set (then under a unique path per run, on mount $VAULT_KV_MOUNT or ``secret``, removed afterwards).
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vault_server  # noqa: E402

from rh_iac.errors import SecretConflictError, SecretError, VaultPermissionError  # noqa: E402
from rh_iac.secrets import SecretStore  # noqa: E402
from rh_iac.secrets.vault import VaultSecretStore  # noqa: E402

CANARY = "canary-vault-5e1b7d2a-do-not-leak-93c4"
REAL_VAULT = bool(os.environ.get("VAULT_ADDR") and os.environ.get("VAULT_TOKEN"))


@dataclass
class Vault:
    url: str
    token: str
    mount: str
    path: str
    fake: vault_server.VaultServer | None

    def store(self, **kw: object) -> VaultSecretStore:
        args: dict = {"url": self.url, "token": self.token, "mount": self.mount, "path": self.path, **kw}
        return VaultSecretStore(**args)


@pytest.fixture(scope="session")
def vault_endpoint() -> Iterator[tuple[str, str, vault_server.VaultServer | None]]:
    """(url, token, fake server or None): a real Vault if VAULT_ADDR/VAULT_TOKEN are set, else the test server."""
    if REAL_VAULT:
        yield os.environ["VAULT_ADDR"], os.environ["VAULT_TOKEN"], None
        return
    server = vault_server.start()
    try:
        yield server.url, server.token, server
    finally:
        server.stop()


@pytest.fixture
def vault(vault_endpoint: tuple[str, str, vault_server.VaultServer | None]) -> Iterator[Vault]:
    """A Vault with a fresh path for this test; everything under it is deleted afterwards."""
    url, token, fake = vault_endpoint
    v = Vault(url, token, os.environ.get("VAULT_KV_MOUNT", "secret"), f"rh_iac-test-{uuid.uuid4().hex[:12]}", fake)
    yield v
    store = v.store()
    for name in store.names():
        store.delete(name)
    store._kv().delete_metadata_and_all_versions(path=f"{v.path}/_rh_iac/fingerprint-key", mount_point=v.mount)


@pytest.fixture
def store(vault: Vault) -> VaultSecretStore:
    return vault.store()


def test_store_implements_protocol_and_round_trips(store: VaultSecretStore) -> None:
    assert isinstance(store, SecretStore)
    assert not store.exists("db-password")
    fp = store.put("db-password", CANARY)
    assert store.exists("db-password")
    assert store.get("db-password") == CANARY
    assert fp == store.fingerprint("db-password") == store.fingerprint_of(CANARY)
    assert len(fp) == 16 and CANARY not in fp
    assert store.fingerprint_of("other") != fp
    assert store.names() == ["db-password"]  # the fingerprint key is not listed as a secret


def test_versions_grow_and_old_versions_stay_readable(store: VaultSecretStore) -> None:
    assert store.versions("token") == []
    assert store.put_version("token", "one") == 1
    assert store.put_version("token", "two") == 2
    assert store.put_version("token", "three") == 3
    assert store.versions("token") == [1, 2, 3]
    assert store.current_version("token") == 3
    assert store.get("token") == "three"
    assert store.get("token", version=1) == "one"
    assert store.get("token", version=2) == "two"
    with pytest.raises(SecretError, match=r"no version 7 of secret 'token'.*versions \[1, 2, 3\]"):
        store.get("token", version=7)


def test_check_and_set_success_and_conflict(store: VaultSecretStore) -> None:
    assert store.put_version("api-key", "v1", cas=0) == 1  # cas=0: create only
    assert store.put_version("api-key", "v2", cas=1) == 2
    with pytest.raises(SecretConflictError) as info:
        store.put_version("api-key", "v3", cas=1)
    msg = str(info.value)
    assert "'api-key'" in msg and "expected version 1" in msg and "current version is 2" in msg and "cas=2" in msg
    with pytest.raises(SecretConflictError, match="expected version 0 but the current version is 2"):
        store.put("api-key", "again", cas=0)
    assert store.get("api-key") == "v2"  # nothing was written by the failed writes
    assert store.versions("api-key") == [1, 2]
    with pytest.raises(SecretError, match="cas must be a version number"):
        store.put_version("api-key", "x", cas=-1)


def test_conflict_on_a_secret_that_does_not_exist(store: VaultSecretStore) -> None:
    with pytest.raises(SecretConflictError, match="expected version 4 but the secret does not exist yet.*cas=0"):
        store.put_version("fresh", "x", cas=4)
    assert not store.exists("fresh")


def test_bad_token_is_a_permission_error_naming_secret_and_fix(vault: Vault, store: VaultSecretStore) -> None:
    store.put("db-password", CANARY)
    bad = vault.store(token="hvs.not-a-valid-token")
    for call in (lambda: bad.get("db-password"), lambda: bad.put("db-password", CANARY), lambda: bad.exists("x")):
        with pytest.raises(VaultPermissionError) as info:
            call()
        msg = str(info.value)
        assert f"{vault.mount}/{vault.path}" in msg
        assert "policy" in msg and "token" in msg
        assert CANARY not in msg and "hvs.not-a-valid-token" not in msg
    with pytest.raises(VaultPermissionError, match="'db-password'"):
        bad.get("db-password")
    assert isinstance(VaultPermissionError("x"), SecretError)


def test_missing_secret_is_a_secret_error_naming_it(vault: Vault, store: VaultSecretStore) -> None:
    with pytest.raises(SecretError, match=rf"no secret 'nope' at {vault.mount}/{vault.path}") as info:
        store.get("nope")
    assert not isinstance(info.value, VaultPermissionError)
    assert store.fingerprint("nope") is None
    assert store.delete("nope") is False


def test_delete_removes_all_versions(store: VaultSecretStore) -> None:
    store.put("gone", "a")
    store.put("gone", "b")
    store.put("kept", "c")
    assert store.delete("gone") is True
    assert not store.exists("gone")
    assert store.versions("gone") == []
    with pytest.raises(SecretError, match="no secret 'gone'"):
        store.get("gone", version=1)
    assert store.names() == ["kept"]
    assert store.put_version("gone", "new") == 1  # history is gone too: versions restart


def test_unreachable_vault_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    store = VaultSecretStore(url, token="t", timeout=2)
    with pytest.raises(SecretError, match=rf"cannot reach Vault at {url}"):
        store.get("anything")


def test_address_and_token_from_environment(vault: Vault, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VAULT_ADDR", vault.url)
    monkeypatch.setenv("VAULT_TOKEN", vault.token)
    store = VaultSecretStore(mount=vault.mount, path=vault.path)
    assert store.url == vault.url.rstrip("/")
    store.put("from-env", "x")
    assert store.get("from-env") == "x"

    monkeypatch.delenv("VAULT_TOKEN")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SecretError, match="no Vault token.*VAULT_TOKEN"):
        VaultSecretStore(mount=vault.mount, path=vault.path).get("from-env")
    (tmp_path / ".vault-token").write_text(vault.token + "\n")
    assert VaultSecretStore(mount=vault.mount, path=vault.path).get("from-env") == "x"

    monkeypatch.delenv("VAULT_ADDR")
    with pytest.raises(SecretError, match="no Vault address.*VAULT_ADDR"):
        VaultSecretStore(token="t").get("x")


def test_invalid_names_mounts_and_paths_are_rejected(store: VaultSecretStore) -> None:
    with pytest.raises(SecretError, match="invalid"):
        store.put("Bad Name", "x")
    with pytest.raises(SecretError, match="path '../up' is invalid"):
        VaultSecretStore("http://127.0.0.1:1", "t", path="../up")
    with pytest.raises(SecretError, match="mount '' is invalid"):
        VaultSecretStore("http://127.0.0.1:1", "t", mount="")
    with pytest.raises(SecretError, match="must be a str"):
        store.put("ok", 123)  # type: ignore[arg-type]


def test_unknown_mount_is_a_secret_error(vault: Vault) -> None:
    if vault.fake is None:
        pytest.skip("a real Vault may answer 403 or 404 for an unmounted path, depending on the token's policy")
    with pytest.raises(SecretError, match="no secret 'x' at nowhere/"):
        vault.store(mount="nowhere").get("x")


def test_canary_never_in_messages_repr_or_logs(
    vault: Vault, store: VaultSecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store.put_version("canary", CANARY)
    errors: list[BaseException] = []
    for call in (
        lambda: store.put_version("canary", CANARY, cas=0),
        lambda: vault.store(token="wrong").put("canary", CANARY),
        lambda: store.get("canary", version=5),
        lambda: VaultSecretStore("http://127.0.0.1:1", token=CANARY, timeout=1).put("canary", CANARY),
    ):
        with pytest.raises(SecretError) as info:
            call()
        errors.append(info.value)
    assert len(errors) == 4
    for exc in errors:
        chain: BaseException | None = exc
        while chain is not None:  # no hvac/requests exception carrying request data rides along
            assert CANARY not in str(chain) and CANARY not in repr(chain)
            chain = chain.__cause__ or chain.__context__
        assert exc.__cause__ is None
    with_token = VaultSecretStore(vault.url, token=CANARY, mount=vault.mount, path=vault.path)
    assert CANARY not in repr(store) and CANARY not in repr(with_token) and CANARY not in str(with_token)
    assert vault.token not in repr(store)
    assert CANARY not in caplog.text
    if vault.fake is not None:  # the value travels in request bodies only, never in a URL
        assert not any(CANARY in path for _, path in vault.fake.requests)


def test_store_pickles_without_its_client(store: VaultSecretStore) -> None:
    store.put("p", "v")
    clone = pickle.loads(pickle.dumps(store))
    assert clone._client is None and clone.get("p") == "v"


def test_import_rh_iac_does_not_import_hvac() -> None:
    import subprocess

    code = "import sys, rh_iac, rh_iac.secrets, rh_iac.secrets.vault; print('hvac' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
