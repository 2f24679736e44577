"""The local encrypted secret store: round trip, permissions, no plaintext at rest, key handling, fingerprints."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest

from rh_iac.errors import SecretError
from rh_iac.secrets import LocalSecretStore, SecretStore, generate_token, rh_iac_home

CANARY = "canary-7f3a9c1e-do-not-leak-4b2d"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """RH_IAC_HOME and HOME in tmp_path: the real home is never touched."""
    monkeypatch.setenv("HOME", str(tmp_path / "fake-home"))
    monkeypatch.setenv("RH_IAC_HOME", str(tmp_path / "rh_iac_home"))
    return tmp_path / "rh_iac_home"


@pytest.fixture
def store(tmp_path: Path) -> LocalSecretStore:
    return LocalSecretStore(tmp_path / "project" / ".secrets")


def test_rh_iac_home_follows_env_and_defaults_to_home(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert rh_iac_home() == home
    monkeypatch.delenv("RH_IAC_HOME")
    assert rh_iac_home() == tmp_path / "fake-home" / ".rh_iac"


def test_round_trip_and_api(store: LocalSecretStore) -> None:
    assert isinstance(store, SecretStore)
    assert not store.exists("db-password")
    fp = store.put("db-password", CANARY)
    assert store.exists("db-password")
    assert store.get("db-password") == CANARY
    assert fp == store.fingerprint("db-password") == store.fingerprint_of(CANARY)
    store.put("db-password", "second value with ünïcode")
    assert store.get("db-password") == "second value with ünïcode"
    store.put("api-token", "")
    assert store.get("api-token") == ""
    assert store.names() == ["api-token", "db-password"]
    assert store.delete("db-password") is True
    assert store.delete("db-password") is False
    assert not store.exists("db-password")
    assert store.fingerprint("db-password") is None


def test_missing_secret_names_it(store: LocalSecretStore) -> None:
    with pytest.raises(SecretError, match="'nope'.*not in the local store"):
        store.get("nope")


@pytest.mark.parametrize("bad", ["", "UPPER", "../escape", "a/b", "-lead", "x" * 200, 3])
def test_invalid_names_are_refused(store: LocalSecretStore, bad: object) -> None:
    with pytest.raises(SecretError, match="invalid"):
        store.put(bad, "v")  # type: ignore[arg-type]


def test_key_created_on_first_use_with_private_permissions(store: LocalSecretStore, home: Path) -> None:
    key_file = home / "secrets.key"
    assert store.key_file == key_file
    assert not key_file.exists()  # not at construction
    store.put("s", "v")
    assert key_file.is_file()
    assert _mode(key_file) == 0o600
    assert _mode(home) == 0o700
    assert _mode(store.root) == 0o700
    files = [p for p in store.root.iterdir()]
    assert files and all(_mode(p) == 0o600 for p in files)
    assert not any(p.name.endswith(".tmp") for p in files)


def test_permissions_hold_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = LocalSecretStore(tmp_path / "loose" / "secrets", key_file=tmp_path / "keys" / "k")
        store.put("s", "v")
    finally:
        os.umask(old)
    assert _mode(store.root) == 0o700
    assert _mode(store.root / "s.secret") == 0o600
    assert _mode(tmp_path / "keys" / "k") == 0o600
    assert _mode(tmp_path / "keys") == 0o700


def test_canary_never_appears_at_rest_or_in_repr(store: LocalSecretStore, home: Path) -> None:
    store.put("canary", CANARY)
    store.put("canary", CANARY + "-v2")  # overwrite leaves no old plaintext behind either
    store.put("other", "x")
    needles = [CANARY.encode(), base64.b64encode(CANARY.encode()), base64.urlsafe_b64encode(CANARY.encode())[:20]]
    scanned = 0
    for base in (store.root, home):
        for path in base.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                scanned += 1
                for needle in needles:
                    assert needle not in data, f"plaintext found in {path}"
    assert scanned >= 3
    assert CANARY not in repr(store) and CANARY not in str(store)
    assert CANARY not in store.fingerprint_of(CANARY)


def test_wrong_key_is_refused(store: LocalSecretStore, tmp_path: Path) -> None:
    store.put("db-password", CANARY)
    other = LocalSecretStore(store.root, key_file=tmp_path / "other-key" / "secrets.key")
    expected = r"secret 'db-password' cannot be decrypted with key file .*other-key.*was the key replaced"
    with pytest.raises(SecretError, match=expected):
        other.get("db-password")


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "secrets.key"
    LocalSecretStore(tmp_path / "s", key_file=key_file).put("a", "v")
    os.chmod(key_file, 0o644)
    fresh = LocalSecretStore(tmp_path / "s", key_file=key_file)
    with pytest.raises(SecretError, match=rf"{key_file}.*0644.*chmod 600"):
        fresh.get("a")
    os.chmod(key_file, 0o600)
    assert fresh.get("a") == "v"


def test_invalid_key_content_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "secrets.key"
    key_file.parent.mkdir()
    key_file.write_bytes(b"not a fernet key")
    os.chmod(key_file, 0o600)
    with pytest.raises(SecretError, match="valid Fernet key"):
        LocalSecretStore(tmp_path / "s", key_file=key_file).put("a", "v")


def test_key_inside_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="inside the secret store"):
        LocalSecretStore(tmp_path / "s", key_file=tmp_path / "s" / "key").put("a", "v")


def test_swapped_secret_file_is_detected(store: LocalSecretStore) -> None:
    store.put("a", "value-a")
    os.replace(store.root / "a.secret", store.root / "b.secret")
    with pytest.raises(SecretError, match="does not hold secret 'b'"):
        store.get("b")


def test_fingerprints_are_keyed(store: LocalSecretStore, tmp_path: Path) -> None:
    fp1 = store.put("s", "value-one")
    fp2 = store.put("s", "value-two")
    assert fp1 != fp2
    assert len(fp1) == 16 and all(c in "0123456789abcdef" for c in fp1)
    assert store.fingerprint_of("value-one") == fp1  # stable for one key
    other = LocalSecretStore(tmp_path / "other", key_file=tmp_path / "k2" / "secrets.key")
    assert other.fingerprint_of("value-one") != fp1
    assert fp1 != hashlib.sha256(b"value-one").hexdigest()[:16]  # not an unkeyed hash


def test_generate_token() -> None:
    a, b = generate_token(), generate_token()
    assert a != b and len(a) >= 43
    assert len(generate_token(8)) == 11
