"""Secret values: where they are kept, and the interface every store offers.

A secret's value never enters git, IaC state, RNS records or logs; only its name and a keyed fingerprint (which cannot
be computed without the store's key) are recorded elsewhere. :class:`LocalSecretStore` keeps values encrypted on this
machine; other stores (e.g. Vault) implement the same :class:`SecretStore` protocol. :func:`deliver` (in
:mod:`rh_iac.secrets.delivery`, loaded on first use because it imports distributed) hands values to a cluster's
workers as environment variables or 0600 files.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

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


#: names served lazily from rh_iac.secrets.delivery (which imports distributed)
_DELIVERY = ("ProviderSecret", "SecretDelivery", "SecretPlugin", "deliver", "revoke", "secret_file")


def __getattr__(name: str) -> Any:
    if name in _DELIVERY:
        from rh_iac.secrets import delivery

        value = getattr(delivery, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rh_iac.secrets' has no attribute {name!r}")


__all__ = [
    "PROVIDERS",
    "LocalSecretStore",
    "ProviderSecret",
    "SecretDelivery",
    "SecretPlugin",
    "SecretStore",
    "VaultSecretStore",
    "deliver",
    "discover",
    "generate_token",
    "revoke",
    "rh_iac_home",
    "secret_file",
]
