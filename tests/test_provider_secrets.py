"""Provider secrets discovered from a fake HOME and a fake environment (the real ones are never read)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rh_iac.errors import SecretError, UnknownSecretProviderError
from rh_iac.secrets.providers import PROVIDERS, discover

CANARY = "canary-provider-0c7e91d4-do-not-leak"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake, empty home; HOME points there too, so a lookup that ignored ``home=`` still cannot see the real one."""
    fake = tmp_path / "home"
    fake.mkdir()
    monkeypatch.setenv("HOME", str(fake))
    return fake


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- aws -----------------------------------------------------------------------------------------------------------
def test_aws_from_environment_wins_over_file(home: Path) -> None:
    _write(home / ".aws" / "credentials", "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n")
    env = {"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": CANARY, "AWS_SESSION_TOKEN": "sess"}
    assert discover("aws", home=home, environ=env) == {
        "AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": CANARY, "AWS_SESSION_TOKEN": "sess"}


def test_aws_from_credentials_file_default_and_profile(home: Path) -> None:
    _write(home / ".aws" / "credentials",
           "[default]\naws_access_key_id = AKIADEF\naws_secret_access_key = defsecret\n\n"
           "[work]\naws_access_key_id = AKIAWORK\naws_secret_access_key = worksecret\naws_session_token = tok\n")
    assert discover("aws", home=home, environ={}) == {"AWS_ACCESS_KEY_ID": "AKIADEF",
                                                     "AWS_SECRET_ACCESS_KEY": "defsecret"}
    assert discover("aws", home=home, environ={"AWS_PROFILE": "work"}) == {
        "AWS_ACCESS_KEY_ID": "AKIAWORK", "AWS_SECRET_ACCESS_KEY": "worksecret", "AWS_SESSION_TOKEN": "tok"}
    with pytest.raises(SecretError, match=r"no profile \[nope\].*'default', 'work'.*AWS_PROFILE"):
        discover("aws", home=home, environ={"AWS_PROFILE": "nope"})


def test_aws_shared_credentials_file_variable(home: Path, tmp_path: Path) -> None:
    creds = _write(tmp_path / "elsewhere.ini", "[default]\naws_access_key_id = K\naws_secret_access_key = S\n")
    assert discover("aws", home=home, environ={"AWS_SHARED_CREDENTIALS_FILE": str(creds)})["AWS_ACCESS_KEY_ID"] == "K"


def test_aws_half_set_environment_and_nothing_found(home: Path) -> None:
    with pytest.raises(SecretError, match="AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"):
        discover("aws", home=home, environ={"AWS_ACCESS_KEY_ID": "AKIA"})
    with pytest.raises(SecretError) as info:
        discover("aws", home=home, environ={})
    msg = str(info.value)
    assert "$AWS_ACCESS_KEY_ID" in msg and str(home / ".aws" / "credentials") in msg and "aws configure" in msg


def test_aws_profile_without_static_keys(home: Path) -> None:
    _write(home / ".aws" / "credentials", "[default]\nsso_session = corp\n")
    with pytest.raises(SecretError, match=r"\[default\].*lacks aws_access_key_id"):
        discover("aws", home=home, environ={})


# --- gcp -----------------------------------------------------------------------------------------------------------
def test_gcp_from_variable_and_from_gcloud_default(home: Path, tmp_path: Path) -> None:
    key = json.dumps({"type": "service_account", "private_key": CANARY})
    sa = _write(tmp_path / "sa.json", key)
    assert discover("gcp", home=home, environ={"GOOGLE_APPLICATION_CREDENTIALS": str(sa)}) == {
        "GOOGLE_APPLICATION_CREDENTIALS_JSON": key}
    adc = json.dumps({"type": "authorized_user", "refresh_token": "r"})
    _write(home / ".config" / "gcloud" / "application_default_credentials.json", adc)
    assert discover("gcp", home=home, environ={})["GOOGLE_APPLICATION_CREDENTIALS_JSON"] == adc


def test_gcp_errors(home: Path, tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="points at .*missing.json, which does not exist"):
        discover("gcp", home=home, environ={"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json")})
    with pytest.raises(SecretError, match="application_default_credentials.json.*gcloud auth application-default"):
        discover("gcp", home=home, environ={})
    bad = _write(tmp_path / "bad.json", CANARY)
    with pytest.raises(SecretError, match="not a Google credentials JSON") as info:
        discover("gcp", home=home, environ={"GOOGLE_APPLICATION_CREDENTIALS": str(bad)})
    assert CANARY not in str(info.value)


# --- huggingface -------------------------------------------------------------------------------------------------
def test_huggingface_env_then_token_file(home: Path, tmp_path: Path) -> None:
    assert discover("huggingface", home=home, environ={"HF_TOKEN": "hf_env"}) == {"HF_TOKEN": "hf_env"}
    assert discover("huggingface", home=home, environ={"HUGGING_FACE_HUB_TOKEN": "hf_old"}) == {"HF_TOKEN": "hf_old"}
    _write(home / ".cache" / "huggingface" / "token", "hf_file\n")
    assert discover("huggingface", home=home, environ={}) == {"HF_TOKEN": "hf_file"}
    _write(tmp_path / "hfhome" / "token", "hf_home\n")
    assert discover("huggingface", home=home, environ={"HF_HOME": str(tmp_path / "hfhome")}) == {"HF_TOKEN": "hf_home"}


def test_huggingface_nothing_found(home: Path) -> None:
    with pytest.raises(SecretError, match=r"\$HF_TOKEN, \$HUGGING_FACE_HUB_TOKEN, .*huggingface/token.*login"):
        discover("huggingface", home=home, environ={"HF_TOKEN": "  "})


# --- github --------------------------------------------------------------------------------------------------------
def test_github_env_then_gh_hosts_file(home: Path) -> None:
    assert discover("github", home=home, environ={"GITHUB_TOKEN": "ghp_env"}) == {"GITHUB_TOKEN": "ghp_env"}
    assert discover("github", home=home, environ={"GH_TOKEN": "ghp_gh", "GITHUB_TOKEN": "x"}) == {
        "GITHUB_TOKEN": "ghp_gh"}
    _write(home / ".config" / "gh" / "hosts.yml",
           "github.com:\n    user: someone\n    oauth_token: gho_file\n    git_protocol: https\n")
    assert discover("github", home=home, environ={}) == {"GITHUB_TOKEN": "gho_file"}


def test_github_hosts_file_without_token(home: Path) -> None:
    _write(home / ".config" / "gh" / "hosts.yml", "github.com:\n    user: someone\n    git_protocol: https\n")
    with pytest.raises(SecretError, match="no oauth_token for github.com.*gh auth token"):
        discover("github", home=home, environ={})
    with pytest.raises(SecretError, match="no github credentials found"):
        discover("github", home=home / "nowhere", environ={})


# --- ssh -----------------------------------------------------------------------------------------------------------
def test_ssh_prefers_ed25519_and_includes_public_key(home: Path) -> None:
    rsa = "-----BEGIN RSA PRIVATE KEY-----\nrsa\n-----END RSA PRIVATE KEY-----\n"
    _write(home / ".ssh" / "id_rsa", rsa)
    assert discover("ssh", home=home, environ={}) == {"SSH_PRIVATE_KEY": rsa}
    ed = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{CANARY}\n-----END OPENSSH PRIVATE KEY-----\n"
    _write(home / ".ssh" / "id_ed25519", ed)
    _write(home / ".ssh" / "id_ed25519.pub", "ssh-ed25519 AAAAC3 me@host\n")
    assert discover("ssh", home=home, environ={}) == {"SSH_PRIVATE_KEY": ed, "SSH_PUBLIC_KEY": "ssh-ed25519 AAAAC3 me@host"}


def test_ssh_nothing_found_and_not_a_key(home: Path) -> None:
    with pytest.raises(SecretError, match=r"id_ed25519.*id_rsa.*ssh-keygen"):
        discover("ssh", home=home, environ={})
    _write(home / ".ssh" / "id_ed25519", CANARY)
    with pytest.raises(SecretError, match="does not hold a private key") as info:
        discover("ssh", home=home, environ={})
    assert CANARY not in str(info.value)


# --- custom and unknown --------------------------------------------------------------------------------------------
def test_custom_values_are_returned_as_given(home: Path) -> None:
    values = {"API_KEY": CANARY, "API_URL": "https://x"}
    got = discover("custom", values=values)
    assert got == values and got is not values
    with pytest.raises(SecretError, match="pass the values yourself"):
        discover("custom")
    with pytest.raises(SecretError, match=r"\['N'\] need non-empty str names and str values") as info:
        discover("custom", values={"N": 3, "OK": CANARY})  # type: ignore[dict-item]
    assert CANARY not in str(info.value)
    with pytest.raises(SecretError, match="only for the custom provider"):
        discover("aws", home=home, environ={}, values={"A": "b"})


def test_unknown_provider_lists_known_ones(home: Path) -> None:
    with pytest.raises(UnknownSecretProviderError) as info:
        discover("azure", home=home, environ={})
    msg = str(info.value)
    assert "'azure'" in msg
    for name in ("aws", "gcp", "huggingface", "github", "ssh", "custom"):
        assert name in msg
    assert isinstance(info.value, SecretError)
    assert set(PROVIDERS) == {"aws", "gcp", "huggingface", "github", "ssh", "custom"}
    assert discover("  AWS ", home=home, environ={"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})


def test_values_never_in_error_messages(home: Path) -> None:
    """Every failing lookup, with the canary planted everywhere it could be read, keeps it out of the message."""
    _write(home / ".aws" / "credentials", f"[default]\naws_session_token = {CANARY}\n")
    _write(home / ".config" / "gh" / "hosts.yml", f"github.com:\n    user: {CANARY}\n")
    env = {"AWS_PROFILE": "default", "GITHUB_TOKEN": "", "AWS_SECRET_ACCESS_KEY": ""}
    for provider in ("aws", "github", "huggingface", "gcp", "ssh"):
        with pytest.raises(SecretError) as info:
            discover(provider, home=home, environ=env)
        assert CANARY not in str(info.value), provider
    with pytest.raises(SecretError) as info:
        discover("aws", home=home, environ={"AWS_SECRET_ACCESS_KEY": CANARY})
    assert CANARY not in str(info.value)


def test_default_environ_is_os_environ(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_from_os_environ")
    assert discover("huggingface", home=home) == {"HF_TOKEN": "hf_from_os_environ"}
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    _write(home / ".cache" / "huggingface" / "token", "hf_default_home")
    assert discover("huggingface") == {"HF_TOKEN": "hf_default_home"}  # home defaults to ~ (the fake HOME here)
