"""Secrets in HashiCorp Vault's KV version 2 engine, through hvac.

Layout: secret ``name`` is the KV v2 secret ``<mount>/data/<path>/<name>`` holding ``{"value": <value>}``; Vault keeps
its versions (``versions``, ``get(name, version=...)``) and check-and-set (``put(..., cas=n)``: write only if the
current version is ``n``; ``cas=0``: only if the secret does not exist yet). Fingerprints are keyed with a random key
kept in Vault itself at ``<mount>/data/<path>/_rh_iac/fingerprint-key`` (created on first use), so, as with the local
store, they can be recorded in git and state but cannot be computed or brute-forced without access to Vault.

The address comes from ``url`` or ``$VAULT_ADDR``; the token from ``token``, ``$VAULT_TOKEN`` or ``~/.vault-token``
(what ``vault login`` writes). hvac is imported on first use, so ``import rh_iac`` stays fast. Values and the token
are never put in an exception message, a log record or a repr.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rh_iac.errors import SecretConflictError, SecretError, VaultPermissionError
from rh_iac.secrets.local import _NAME_RE, _validate_name, generate_token

T = TypeVar("T")

_FP_KEY_NAME = "_rh_iac/fingerprint-key"
_FP_LABEL = b"rh_iac vault secret fingerprint v1"
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_CAS_MISMATCH = "check-and-set parameter did not match"


def _clean_path(what: str, raw: str) -> str:
    """``raw`` stripped of surrounding slashes, checked segment by segment (no empty, ``.`` or ``..`` segments)."""
    if not isinstance(raw, str):
        raise SecretError(f"Vault {what} must be a str, got {type(raw).__name__}.")
    cleaned = raw.strip("/")
    segments = cleaned.split("/")
    if not cleaned or any(s in (".", "..") or not _SEGMENT_RE.match(s) for s in segments):
        raise SecretError(
            f"Vault {what} {raw!r} is invalid: use '/'-separated segments of letters, digits, '_', '-' and '.' "
            "(e.g. 'secret' for the mount, 'rh_iac/prod' for the path)."
        )
    return cleaned


def _scrub(text: str, *secrets: str | None) -> str:
    """``text`` with every occurrence of the given secret strings replaced (defence in depth for server messages)."""
    for s in secrets:
        if s:
            text = text.replace(s, "<redacted>")
    return text


class VaultSecretStore:
    """A :class:`~rh_iac.secrets.SecretStore` over Vault KV v2 at ``<mount>/<path>``.

    Args:
        url: Vault's address (e.g. ``https://vault.example.com:8200``); defaults to ``$VAULT_ADDR``.
        token: a Vault token; defaults to ``$VAULT_TOKEN``, then the file ``~/.vault-token``.
        mount: where the KV v2 engine is mounted (``secret`` on a dev server).
        path: the folder under the mount that holds this store's secrets.
        namespace: a Vault Enterprise namespace, if any.
        verify: TLS verification: True, False, or the path of a CA bundle.
        timeout: seconds to wait for each request.

    The token needs ``create``, ``read``, ``update`` on ``<mount>/data/<path>/*`` and ``read``, ``list``, ``delete`` on
    ``<mount>/metadata/<path>/*``.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        mount: str = "secret",
        path: str = "rh_iac",
        namespace: str | None = None,
        verify: bool | str = True,
        timeout: float = 10.0,
    ) -> None:
        self.url = (url or os.environ.get("VAULT_ADDR") or "").rstrip("/") or None
        self.mount = _clean_path("mount", mount)
        self.path = _clean_path("path", path)
        self.namespace = namespace
        self.verify = verify
        self.timeout = timeout
        self._token = token
        self._client: Any = None
        self._fp_key: bytes | None = None

    def __repr__(self) -> str:
        return f"VaultSecretStore(url={self.url!r}, mount={self.mount!r}, path={self.path!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None  # a requests session; rebuilt lazily where the store is unpickled
        state["_fp_key"] = None
        return state

    # --- connection -----------------------------------------------------------------------------------------------
    @property
    def location(self) -> str:
        """``<mount>/<path>`` on ``<url>``: where this store's secrets are, for messages."""
        return f"{self.mount}/{self.path} on Vault {self.url}"

    def _resolve_token(self) -> str:
        if self._token:
            return self._token
        env = os.environ.get("VAULT_TOKEN")
        if env:
            return env
        token_file = Path.home() / ".vault-token"
        try:
            text = token_file.read_text().strip()
        except OSError:
            text = ""
        if text:
            return text
        raise SecretError(
            f"no Vault token for {self.location}: pass token=..., set VAULT_TOKEN, or run `vault login` "
            f"(which writes {token_file})."
        )

    def _hvac(self) -> Any:
        if self._client is not None:
            return self._client
        if not self.url:
            raise SecretError(
                f"no Vault address for secrets at {self.mount}/{self.path}: pass url=... or set VAULT_ADDR "
                "(e.g. https://vault.example.com:8200)."
            )
        token = self._resolve_token()
        import hvac  # lazily: keeps `import rh_iac` fast

        self._client = hvac.Client(
            url=self.url, token=token, namespace=self.namespace, verify=self.verify, timeout=self.timeout
        )
        return self._client

    def _kv(self) -> Any:
        return self._hvac().secrets.kv.v2

    def _secret_path(self, name: str) -> str:
        return f"{self.path}/{name}"

    def _call(
        self,
        op: str,
        name: str,
        fn: Callable[[], T],
        *,
        capability: str,
        value: str | None = None,
        on_missing: Callable[[], T] | None = None,
        on_conflict: Callable[[], T] | None = None,
    ) -> T:
        """Run ``fn`` (an hvac call) and turn hvac's and requests' errors into rh_iac's, naming ``name`` and the fix."""
        import hvac.exceptions as hx
        import requests.exceptions as rx

        where = f"{self.mount}/{self.path}/{name}"
        try:
            return fn()
        except (hx.Forbidden, hx.Unauthorized):
            raise VaultPermissionError(
                f"Vault denied {op} of secret {name!r} at {where} on {self.url} (permission denied): check that the "
                f"token (token=..., VAULT_TOKEN or ~/.vault-token) is valid and not expired, and that its policy "
                f"grants {capability} on {self.mount}/data/{self.path}/* and {self.mount}/metadata/{self.path}/*."
            ) from None
        except hx.InvalidPath:
            if on_missing is not None:
                return on_missing()
            raise SecretError(
                f"no secret {name!r} at {self.mount}/{self.path} on Vault {self.url} (404): put it first, or check "
                "the mount and path (is the KV v2 engine mounted there?)."
            ) from None
        except hx.InvalidRequest as exc:
            message = _scrub(", ".join(map(str, exc.errors or [])) or str(exc.args[0] if exc.args else ""),
                             value, self._token)
            if _CAS_MISMATCH in message and on_conflict is not None:
                return on_conflict()
            raise SecretError(
                f"Vault rejected {op} of secret {name!r} at {where} on {self.url} (400: {message}): check that the "
                f"mount {self.mount!r} is a KV version 2 engine."
            ) from None
        except (hx.VaultDown, hx.VaultNotInitialized):
            raise SecretError(
                f"Vault at {self.url} is sealed, down or not initialized ({op} of secret {name!r}): unseal it or "
                "point VAULT_ADDR at a running Vault."
            ) from None
        except hx.VaultError as exc:
            message = _scrub(str(exc.args[0]) if exc.args else type(exc).__name__, value, self._token)
            raise SecretError(
                f"Vault failed {op} of secret {name!r} at {where} on {self.url} ({type(exc).__name__}: {message})."
            ) from None
        except rx.SSLError:
            raise SecretError(
                f"TLS verification failed talking to Vault at {self.url} ({op} of secret {name!r}): pass "
                "verify='/path/to/ca.pem' (or set VAULT_CACERT for the vault CLI) with the CA that signed its "
                "certificate."
            ) from None
        except (rx.ConnectionError, rx.Timeout):
            raise SecretError(
                f"cannot reach Vault at {self.url} ({op} of secret {name!r}): is Vault running there, and is the "
                "address (url=... or VAULT_ADDR) right?"
            ) from None

    # --- versions -------------------------------------------------------------------------------------------------
    def _metadata(self, name: str) -> dict[str, Any] | None:
        resp = self._call(
            "reading the metadata",
            name,
            lambda: self._kv().read_secret_metadata(path=self._secret_path(name), mount_point=self.mount),
            capability="read",
            on_missing=lambda: None,
        )
        return None if resp is None else resp["data"]

    def versions(self, name: str) -> list[int]:
        """The readable versions of secret ``name``, oldest first (``[]`` if it does not exist)."""
        _validate_name(name)
        meta = self._metadata(name)
        if meta is None:
            return []
        return sorted(
            int(v)
            for v, info in (meta.get("versions") or {}).items()
            if not (info or {}).get("deletion_time") and not (info or {}).get("destroyed")
        )

    def current_version(self, name: str) -> int | None:
        """The latest version of secret ``name``, or None if it does not exist."""
        found = self.versions(name)
        return found[-1] if found else None

    # --- API ------------------------------------------------------------------------------------------------------
    def put_version(self, name: str, value: str, cas: int | None = None) -> int:
        """Write ``value`` as a new version of secret ``name`` and return that version number.

        With ``cas=n`` the write happens only if the current version is ``n`` (``cas=0``: only if the secret does not
        exist); otherwise :class:`SecretConflictError` names the expected and the current version.
        """
        _validate_name(name)
        if not isinstance(value, str):
            raise SecretError(f"secret {name!r}: the value must be a str, got {type(value).__name__}.")
        if cas is not None and (isinstance(cas, bool) or not isinstance(cas, int) or cas < 0):
            raise SecretError(f"secret {name!r}: cas must be a version number >= 0 (0: only if absent), got {cas!r}.")

        def conflict() -> int:
            current = self.current_version(name)
            now = f"the current version is {current}" if current else "the secret does not exist yet"
            retry = f"cas={current}" if current else "cas=0"
            raise SecretConflictError(
                f"check-and-set write of secret {name!r} at {self.mount}/{self.path} on Vault {self.url} expected "
                f"version {cas} but {now}: someone else wrote it; read it again and retry with {retry}."
            )

        resp = self._call(
            "writing",
            name,
            lambda: self._kv().create_or_update_secret(
                path=self._secret_path(name), secret={"value": value}, cas=cas, mount_point=self.mount
            ),
            capability="create and update",
            value=value,
            on_conflict=conflict,
        )
        return int(resp["data"]["version"])

    def put(self, name: str, value: str, cas: int | None = None) -> str:
        """Write ``value`` as a new version of secret ``name`` (see :meth:`put_version`) and return its fingerprint."""
        self.put_version(name, value, cas=cas)
        return self.fingerprint_of(value)

    def get(self, name: str, version: int | None = None) -> str:
        """The value of secret ``name`` (its latest version, or ``version``); :class:`SecretError` if missing."""
        _validate_name(name)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise SecretError(f"secret {name!r}: version must be an int >= 1, got {version!r}.")

        def missing() -> dict[str, Any]:
            known = self.versions(name) if version is not None else []
            which = f"version {version} of " if known else ""
            hint = f" (it has versions {known})" if known else ": put it first, or check the mount and path"
            raise SecretError(f"no {which}secret {name!r} at {self.mount}/{self.path} on Vault {self.url}{hint}.")

        resp = self._call(
            "reading",
            name,
            lambda: self._kv().read_secret_version(
                path=self._secret_path(name), version=version, mount_point=self.mount, raise_on_deleted_version=True
            ),
            capability="read",
            on_missing=missing,
        )
        data = (resp.get("data") or {}).get("data") or {}
        value = data.get("value")
        if not isinstance(value, str):
            raise SecretError(
                f"Vault secret {self.mount}/{self.path}/{name} has no string field 'value' (was it written by another "
                f"tool? fields: {sorted(data)}): write it with rh_iac, or as `vault kv put {self.mount}/"
                f"{self.path}/{name} value=...`."
            )
        return value

    def exists(self, name: str) -> bool:
        """Whether secret ``name`` exists (has a readable version)."""
        return bool(self.versions(name))

    def delete(self, name: str) -> bool:
        """Remove secret ``name`` with all its versions and metadata; return whether it existed."""
        existed = self.exists(name)
        self._call(
            "deleting",
            name,
            lambda: self._kv().delete_metadata_and_all_versions(path=self._secret_path(name), mount_point=self.mount),
            capability="delete",
            on_missing=lambda: None,
        )
        return existed

    def names(self) -> list[str]:
        """The names of the secrets under ``<mount>/<path>``, sorted."""
        resp = self._call(
            "listing",
            "*",
            lambda: self._kv().list_secrets(path=self.path, mount_point=self.mount),
            capability="list",
            on_missing=lambda: None,
        )
        keys = [] if resp is None else (resp.get("data") or {}).get("keys") or []
        return sorted(k for k in keys if _NAME_RE.match(k))

    # --- fingerprints ---------------------------------------------------------------------------------------------
    def _fingerprint_key(self) -> bytes:
        if self._fp_key is not None:
            return self._fp_key
        path = self._secret_path(_FP_KEY_NAME)

        def read() -> str | None:
            resp = self._call(
                "reading the fingerprint key",
                _FP_KEY_NAME,
                lambda: self._kv().read_secret_version(path=path, mount_point=self.mount, raise_on_deleted_version=True),
                capability="read",
                on_missing=lambda: None,
            )
            return None if resp is None else ((resp.get("data") or {}).get("data") or {}).get("value")

        key = read()
        if not key:
            new = generate_token()
            self._call(
                "creating the fingerprint key",
                _FP_KEY_NAME,
                lambda: self._kv().create_or_update_secret(
                    path=path, secret={"value": new}, cas=0, mount_point=self.mount
                ),
                capability="create",
                value=new,
                on_conflict=lambda: None,  # another process created it first: use theirs
            )
            key = read()
        if not key:
            raise SecretError(f"the fingerprint key at {self.mount}/{path} on Vault {self.url} cannot be read back.")
        self._fp_key = hashlib.sha256(_FP_LABEL + key.encode()).digest()
        return self._fp_key

    def fingerprint(self, name: str) -> str | None:
        """The fingerprint of secret ``name``'s latest value, or None if it does not exist."""
        if not self.exists(name):
            return None
        return self.fingerprint_of(self.get(name))

    def fingerprint_of(self, value: str) -> str:
        """A keyed fingerprint of ``value``: HMAC-SHA256 (16 hex chars) with this store's key kept in Vault."""
        return hmac.new(self._fingerprint_key(), value.encode(), hashlib.sha256).hexdigest()[:16]
