"""rh_iac: clusters, storage and secrets declared as code, provisioned by a real IaC engine, running your Python.

The DSL (:class:`Stack`, :class:`Cluster`, :class:`Folder`, ...) is imported eagerly and is light; everything that
pulls in Dask, Terraform or cloud SDKs is loaded on first use, so ``import rh_iac`` stays fast.
"""

from __future__ import annotations

from typing import Any

from rh_iac.errors import *  # noqa: F403 - the exception classes are part of the public API
from rh_iac.model import Blob, Cluster, Env, Folder, Resource, Secret, Stack, Table

__version__ = "0.1.0"

_LAZY = {
    "connect": "rh_iac.compute",
    "disconnect": "rh_iac.compute",
    "function": "rh_iac.compute",
    "Function": "rh_iac.compute",
    "RemoteFunction": "rh_iac.compute",
    "Call": "rh_iac.compute",
    "CallTimeoutError": "rh_iac.compute",
    "CallCancelledError": "rh_iac.compute",
    "WorkerDiedError": "rh_iac.compute",
    "module": "rh_iac.modules",
    "ModuleSpec": "rh_iac.modules",
    "RemoteModule": "rh_iac.modules",
    "ModuleLostError": "rh_iac.modules",
    "ModuleClosedError": "rh_iac.modules",
    "CodeReferenceError": "rh_iac.coderef",
    "load": "rh_iac.resolver",
    "deploy": "rh_iac.operations",
    "preview": "rh_iac.operations",
    "status": "rh_iac.operations",
    "destroy": "rh_iac.operations",
    "run": "rh_iac.rns.lineage",
    "Group": "rh_iac.rns.groups",
    "Grant": "rh_iac.rns.groups",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rh_iac' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["Blob", "Cluster", "Env", "Folder", "Resource", "Secret", "Stack", "Table", *_LAZY]
