"""Provider secrets: credentials for aws, gcp, huggingface, github, ssh and custom, discovered when asked.

:func:`discover` reads a provider's credentials from the environment variables and local files its own tools use, in
the order those tools use them, and returns them as a ``dict`` of ``str`` values keyed by the names below (the
environment variable names the provider's SDKs read, where there is one):

=============  ====================================================================================================
provider       keys
=============  ====================================================================================================
aws            ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and, if present, ``AWS_SESSION_TOKEN``
gcp            ``GOOGLE_APPLICATION_CREDENTIALS_JSON``: the text of the credentials JSON file
huggingface    ``HF_TOKEN``
github         ``GITHUB_TOKEN``
ssh            ``SSH_PRIVATE_KEY`` and, if the ``.pub`` file exists, ``SSH_PUBLIC_KEY``
custom         whatever the caller passes as ``values``
=============  ====================================================================================================

Nothing is cached or written, and no value appears in an error message: errors name the places looked at and the fix.
``home`` and ``environ`` default to the user's home directory and ``os.environ`` (tests pass fakes).
"""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from rh_iac.errors import SecretError, UnknownSecretProviderError

__all__ = ["PROVIDERS", "discover"]


class _Lookup:
    """What one discovery needs: the (fake) home and environment, and the list of places looked at, for messages."""

    def __init__(self, home: Path, environ: Mapping[str, str]) -> None:
        self.home = home
        self.environ = environ
        self.looked: list[str] = []

    def env(self, *names: str) -> tuple[str, str] | None:
        """The first of ``names`` set to a non-empty value, as (name, value)."""
        for name in names:
            self.looked.append(f"${name}")
            value = self.environ.get(name)
            if value and value.strip():
                return name, value.strip()
        return None

    def path(self, var: str | None, *default: str) -> Path:
        """``$var`` if set (with ``~`` expanded against ``home``), else ``home/<default...>``."""
        raw = self.environ.get(var) if var else None
        if raw:
            return self.expand(raw)
        return self.home.joinpath(*default)

    def expand(self, raw: str) -> Path:
        if raw == "~" or raw.startswith("~/"):
            return self.home / raw[2:]
        return Path(raw)

    def read(self, path: Path) -> str | None:
        self.looked.append(str(path))
        try:
            return path.read_text()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise SecretError(f"cannot read {path} ({exc.strerror}): check its permissions.") from None

    def not_found(self, provider: str, fix: str) -> SecretError:
        return SecretError(f"no {provider} credentials found (looked at {', '.join(self.looked)}): {fix}")


def _aws(lk: _Lookup) -> dict[str, str]:
    key_id = lk.env("AWS_ACCESS_KEY_ID")
    secret = lk.env("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        found = {"AWS_ACCESS_KEY_ID": key_id[1], "AWS_SECRET_ACCESS_KEY": secret[1]}
        token = lk.env("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
        if token:
            found["AWS_SESSION_TOKEN"] = token[1]
        return found
    if key_id or secret:
        have, missing = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if key_id
                         else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"))
        raise SecretError(f"aws credentials: {have} is set but {missing} is not: set both, or unset {have} to use "
                          "~/.aws/credentials.")
    path = lk.path("AWS_SHARED_CREDENTIALS_FILE", ".aws", "credentials")
    profile = (lk.environ.get("AWS_PROFILE") or lk.environ.get("AWS_DEFAULT_PROFILE") or "default").strip()
    text = lk.read(path)
    if text is None:
        raise lk.not_found("aws", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run `aws configure`.")
    parser = configparser.RawConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error:
        raise SecretError(f"aws credentials file {path} is not a valid INI file: fix it, or run `aws configure`."
                          ) from None
    if not parser.has_section(profile):
        raise SecretError(
            f"aws credentials file {path} has no profile [{profile}] (profiles: {parser.sections()}): set AWS_PROFILE "
            f"to one of them, or run `aws configure --profile {profile}`."
        )
    section = parser[profile]
    key, secret_key = section.get("aws_access_key_id", "").strip(), section.get("aws_secret_access_key", "").strip()
    if not key or not secret_key:
        raise SecretError(
            f"aws profile [{profile}] in {path} lacks aws_access_key_id or aws_secret_access_key (SSO and role "
            "profiles keep no static keys): add the keys, or export them as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."
        )
    found = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret_key}
    token = section.get("aws_session_token", "").strip() or section.get("aws_security_token", "").strip()
    if token:
        found["AWS_SESSION_TOKEN"] = token
    return found


def _gcp(lk: _Lookup) -> dict[str, str]:
    explicit = lk.env("GOOGLE_APPLICATION_CREDENTIALS")
    if explicit:
        path = lk.expand(explicit[1])
        text = lk.read(path)
        if text is None:
            raise SecretError(
                f"GOOGLE_APPLICATION_CREDENTIALS points at {path}, which does not exist: fix the variable or unset it "
                "to use `gcloud auth application-default login`'s credentials."
            )
    else:
        path = lk.path("CLOUDSDK_CONFIG", ".config", "gcloud") / "application_default_credentials.json"
        text = lk.read(path)
        if text is None:
            raise lk.not_found(
                "gcp", "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
                "service account key file."
            )
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or "type" not in parsed:
        raise SecretError(
            f"gcp credentials file {path} is not a Google credentials JSON file (no 'type' field): download the "
            "service account key again, or rerun `gcloud auth application-default login`."
        )
    return {"GOOGLE_APPLICATION_CREDENTIALS_JSON": text}


def _huggingface(lk: _Lookup) -> dict[str, str]:
    found = lk.env("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    if found:
        return {"HF_TOKEN": found[1]}
    if lk.environ.get("HF_TOKEN_PATH"):
        path = lk.expand(lk.environ["HF_TOKEN_PATH"])
    elif lk.environ.get("HF_HOME"):
        path = lk.expand(lk.environ["HF_HOME"]) / "token"
    else:
        path = lk.path("XDG_CACHE_HOME", ".cache") / "huggingface" / "token"
    text = lk.read(path)
    if not text or not text.strip():
        raise lk.not_found("huggingface", "set HF_TOKEN, or run `huggingface-cli login` (`hf auth login`).")
    return {"HF_TOKEN": text.strip()}


def _github(lk: _Lookup) -> dict[str, str]:
    found = lk.env("GH_TOKEN", "GITHUB_TOKEN")
    if found:
        return {"GITHUB_TOKEN": found[1]}
    if lk.environ.get("GH_CONFIG_DIR"):
        config = lk.expand(lk.environ["GH_CONFIG_DIR"])
    else:
        config = lk.path("XDG_CONFIG_HOME", ".config") / "gh"
    path = config / "hosts.yml"
    text = lk.read(path)
    fix = "set GITHUB_TOKEN (or GH_TOKEN), or run `gh auth login`"
    if text is None:
        raise lk.not_found("github", f"{fix}.")
    import yaml  # lazily; PyYAML is a dependency of dask, which rh_iac requires

    try:
        hosts = yaml.safe_load(text)
    except yaml.YAMLError:
        raise SecretError(f"github CLI config {path} is not valid YAML: fix it, or {fix}.") from None
    host = (lk.environ.get("GH_HOST") or "github.com").strip()
    entry = hosts.get(host) if isinstance(hosts, dict) else None
    token = entry.get("oauth_token") if isinstance(entry, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise SecretError(
            f"github CLI config {path} has no oauth_token for {host} (recent gh versions keep the token in the "
            f"system keyring): {fix}, e.g. `export GITHUB_TOKEN=$(gh auth token)`."
        )
    return {"GITHUB_TOKEN": token.strip()}


_SSH_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def _ssh(lk: _Lookup) -> dict[str, str]:
    ssh_dir = lk.home / ".ssh"
    for key in _SSH_KEYS:
        private = lk.read(ssh_dir / key)
        if private is None:
            continue
        if "PRIVATE KEY" not in private:
            raise SecretError(f"ssh key file {ssh_dir / key} does not hold a private key: replace it, or remove it.")
        found = {"SSH_PRIVATE_KEY": private}
        public = lk.read(ssh_dir / f"{key}.pub")
        if public and public.strip():
            found["SSH_PUBLIC_KEY"] = public.strip()
        return found
    raise lk.not_found("ssh", "create a key with `ssh-keygen -t ed25519`, or declare the key as a custom secret.")


def _custom(values: Mapping[str, str] | None) -> dict[str, str]:
    if values is None or not isinstance(values, Mapping) or not values:
        raise SecretError(
            "custom secrets are not discovered: pass the values yourself, e.g. discover('custom', "
            "values={'API_KEY': ...})."
        )
    bad = sorted(str(k) for k, v in values.items() if not isinstance(k, str) or not k or not isinstance(v, str))
    if bad:
        raise SecretError(f"custom secret keys {bad} need non-empty str names and str values.")
    return dict(values)


_DISCOVERERS: dict[str, Callable[[_Lookup], dict[str, str]]] = {
    "aws": _aws,
    "gcp": _gcp,
    "huggingface": _huggingface,
    "github": _github,
    "ssh": _ssh,
}

PROVIDERS: tuple[str, ...] = (*_DISCOVERERS, "custom")
"""The provider names :func:`discover` knows."""


def discover(
    provider: str,
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    values: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The credentials of ``provider`` found in ``environ`` (default ``os.environ``) and under ``home`` (default ``~``).

    Environment variables win over files, as in the providers' own tools. ``values`` is only for ``custom``.

    Raises:
        UnknownSecretProviderError: ``provider`` is not one of :data:`PROVIDERS`.
        SecretError: nothing was found (the message lists where it looked and how to fix it), or a file is malformed.
    """
    key = provider.strip().lower() if isinstance(provider, str) else provider
    if key == "custom":
        return _custom(values)
    discoverer = _DISCOVERERS.get(key) if isinstance(key, str) else None
    if discoverer is None:
        raise UnknownSecretProviderError(
            f"unknown secret provider {provider!r}: use one of {', '.join(PROVIDERS)} (custom for anything else)."
        )
    if values is not None:
        raise SecretError(f"values= is only for the custom provider, not {key!r}: {key} credentials are discovered.")
    lookup = _Lookup(Path(home) if home is not None else Path.home(), os.environ if environ is None else environ)
    return discoverer(lookup)
