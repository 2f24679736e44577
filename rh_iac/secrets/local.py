"""The local encrypted secret store: one Fernet-encrypted file per secret, keyed by a file outside the repo.

Layout: ``<root>/<name>.secret`` (0600) under ``<root>`` (0700); the key lives in ``rh_iac_home()/secrets.key``
(0600, parent 0700) unless another path is given. A key file that others can read is refused, and so is a key that
cannot decrypt a stored value. Values are never logged or shown in a repr.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rh_iac.errors import SecretError
from rh_iac.files import write_atomic

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_SUFFIX = ".secret"
_FINGERPRINT_LABEL = b"rh_iac secret fingerprint v1"


def rh_iac_home() -> Path:
    """rh_iac's per-user directory: ``$RH_IAC_HOME`` if set, else ``~/.rh_iac``."""
    env = os.environ.get("RH_IAC_HOME")
    return Path(env) if env else Path.home() / ".rh_iac"


def generate_token(nbytes: int = 32) -> str:
    """A new random URL-safe token with ``nbytes`` bytes of entropy (for generated secrets)."""
    return secrets.token_urlsafe(nbytes)


def _validate_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SecretError(
            f"secret name {name!r} is invalid: use lowercase letters, digits and hyphens, starting with a letter "
            "or digit (at most 128 characters)."
        )
    return name


def _mkdir_private(path: Path) -> None:
    """Create ``path`` (and parents) if missing and make ``path`` itself 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


class LocalSecretStore:
    """Secrets encrypted at rest with Fernet, one file per secret under ``root``.

    ``key_file`` defaults to ``rh_iac_home() / "secrets.key"``; it is created on first use, must lie outside ``root``
    (this is enforced) and belongs outside any git repository. The key is read lazily, on the first operation that
    needs it.
    """

    def __init__(self, root: Path, key_file: Path | None = None) -> None:
        self.root = Path(root)
        self.key_file = Path(key_file) if key_file is not None else rh_iac_home() / "secrets.key"
        self._fernet: Fernet | None = None
        self._fp_key: bytes | None = None

    def __repr__(self) -> str:
        return f"LocalSecretStore(root={str(self.root)!r})"

    # --- key ------------------------------------------------------------------------------------------------------
    def _load_key(self) -> Fernet:
        if self._fernet is not None:
            return self._fernet
        key_file = self.key_file
        if key_file.resolve().is_relative_to(self.root.resolve()):
            raise SecretError(
                f"key file {key_file} lies inside the secret store {self.root}: keep the key outside the store "
                "and the repository (the default is $RH_IAC_HOME/secrets.key)."
            )
        if not key_file.exists():
            _mkdir_private(key_file.parent)
            try:
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it meanwhile; read theirs below
            else:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(Fernet.generate_key() + b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
        mode = stat.S_IMODE(key_file.stat().st_mode)
        if mode & 0o077:
            raise SecretError(
                f"key file {key_file} has permissions {mode:04o}, readable by other users: "
                f"run `chmod 600 {key_file}` (and consider replacing the key if others may have read it)."
            )
        raw = key_file.read_bytes().strip()
        try:
            fernet = Fernet(raw)
        except (ValueError, TypeError) as exc:
            raise SecretError(
                f"key file {key_file} does not hold a valid Fernet key: restore the original key file, or move it "
                "away to create a new key (values stored with the old key are then unreadable)."
            ) from exc
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_FINGERPRINT_LABEL)
        self._fp_key = hkdf.derive(raw)
        self._fernet = fernet
        return fernet

    # --- paths ----------------------------------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.root / f"{_validate_name(name)}{_SUFFIX}"

    # --- API ------------------------------------------------------------------------------------------------------
    def put(self, name: str, value: str) -> str:
        """Store ``value`` as secret ``name`` (replacing any old value) and return its fingerprint."""
        path = self._path(name)
        if not isinstance(value, str):
            raise SecretError(f"secret {name!r}: the value must be a str, got {type(value).__name__}.")
        fernet = self._load_key()
        _mkdir_private(self.root)
        payload = json.dumps({"name": name, "value": value}).encode()
        write_atomic(path, fernet.encrypt(payload), mode=0o600, fsync=True)
        return self.fingerprint_of(value)

    def get(self, name: str) -> str:
        """The value of secret ``name``; :class:`SecretError` if it is missing or cannot be decrypted."""
        path = self._path(name)
        if not path.is_file():
            raise SecretError(
                f"secret {name!r} is not in the local store {self.root}: put it first "
                "(deploy the stack that declares it, or LocalSecretStore.put)."
            )
        fernet = self._load_key()
        try:
            payload = json.loads(fernet.decrypt(path.read_bytes()))
        except InvalidToken:
            raise SecretError(
                f"secret {name!r} cannot be decrypted with key file {self.key_file}: was the key replaced? "
                "Restore the original key file, or put the secret again."
            ) from None
        if not isinstance(payload, dict) or payload.get("name") != name or not isinstance(payload.get("value"), str):
            raise SecretError(
                f"secret file {path} does not hold secret {name!r} (was it renamed or copied?): put the secret again."
            )
        return payload["value"]

    def exists(self, name: str) -> bool:
        """Whether secret ``name`` is stored."""
        return self._path(name).is_file()

    def delete(self, name: str) -> bool:
        """Remove secret ``name``; return whether it existed (deleting a missing secret is not an error)."""
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def names(self) -> list[str]:
        """The names of the stored secrets, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name[: -len(_SUFFIX)] for p in self.root.glob(f"*{_SUFFIX}") if not p.name.startswith("."))

    def fingerprint(self, name: str) -> str | None:
        """The fingerprint of secret ``name``'s value, or None if it is not stored."""
        if not self.exists(name):
            return None
        return self.fingerprint_of(self.get(name))

    def fingerprint_of(self, value: str) -> str:
        """A keyed fingerprint of ``value``: HMAC-SHA256 with a key derived from the store key, 16 hex chars.

        It changes with the value, differs between store keys, and cannot be computed (or brute-forced) without the
        key, so it is safe to record in git and state to detect a changed secret.
        """
        self._load_key()
        assert self._fp_key is not None
        return hmac.new(self._fp_key, value.encode(), hashlib.sha256).hexdigest()[:16]
