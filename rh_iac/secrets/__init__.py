"""Secret values: where they are kept, and the interface every store offers.

A secret's value never enters git, IaC state, RNS records or logs; only its name and a keyed fingerprint (which cannot
be computed without the store's key) are recorded elsewhere. :class:`LocalSecretStore` keeps values encrypted on this
machine; other stores (e.g. Vault) implement the same :class:`SecretStore` protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rh_iac.secrets.local import LocalSecretStore, generate_token, rh_iac_home
from rh_iac.secrets.providers import PROVIDERS, discover
from rh_iac.secrets.vault import VaultSecretStore


@runtime_checkable
class SecretStore(Protocol):
    """What every secrets store offers. Values are ``str``; fingerprints are short keyed hex digests."""

    def put(self, name: str, value: str) -> str: ...

    def get(self, name: str) -> str: ...

    def exists(self, name: str) -> bool: ...

    def delete(self, name: str) -> bool: ...

    def fingerprint(self, name: str) -> str | None: ...

    def fingerprint_of(self, value: str) -> str: ...


__all__ = [
    "PROVIDERS",
    "LocalSecretStore",
    "SecretStore",
    "VaultSecretStore",
    "discover",
    "generate_token",
    "rh_iac_home",
]
