"""Local secret driver: the value lives encrypted in the stack's local secret store, never in Terraform.

Terraform sees only the secret's name, where its value comes from (an environment variable *name*) and a keyed
fingerprint, so a changed value plans an update without the value entering plan, state or logs.
"""

from __future__ import annotations

import os
from pathlib import Path

from rh_iac.errors import SecretError
from rh_iac.secrets.local import LocalSecretStore, generate_token


def store_for(state_dir: Path) -> LocalSecretStore:
    return LocalSecretStore(Path(state_dir) / "secrets")


def incoming_value(name: str, from_env: str | None) -> str | None:
    """The value offered by the deploying environment, if any."""
    if from_env:
        value = os.environ.get(from_env)
        if value:
            return value
    return None


def create(name: str, from_env: str | None, generate: bool, state_dir: Path) -> dict:
    store = store_for(state_dir)
    value = incoming_value(name, from_env)
    if value is None:
        if not generate:
            raise SecretError(
                f"secret {name!r}: environment variable {from_env} is not set; export it before deploying "
                f"or declare the secret with generate=True"
            )
        value = generate_token()
    return {"fingerprint": store.put(name, value), "store": str(store.root)}


def read(name: str, state: dict, state_dir: Path) -> dict | None:
    fingerprint = store_for(state_dir).fingerprint(name)
    return None if fingerprint is None else {**state, "fingerprint": fingerprint}


def planned_fingerprint(name: str, from_env: str | None, current: str | None, state_dir: Path) -> str | None:
    """The fingerprint the next apply will produce: changes when the environment offers a different value."""
    value = incoming_value(name, from_env)
    if value is None:
        return current
    return store_for(state_dir).fingerprint_of(value)


def update(name: str, from_env: str | None, generate: bool, state_dir: Path) -> dict:
    store = store_for(state_dir)
    value = incoming_value(name, from_env)
    if value is None:
        if store.exists(name):
            return {"fingerprint": store.fingerprint(name), "store": str(store.root)}
        return create(name, from_env, generate, state_dir)
    return {"fingerprint": store.put(name, value), "store": str(store.root)}


def delete(name: str, state_dir: Path) -> None:
    store_for(state_dir).delete(name)
