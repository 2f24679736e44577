"""Providers: how each declared resource becomes infrastructure on one target (local, aws, gcp).

A provider package never imports another's. Engines reach a provider's rendering through :func:`terraform_target`,
which imports it lazily so that ``import rh_iac`` stays free of cloud SDKs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from rh_iac.errors import EngineNotAvailableError

#: provider name -> module holding its Terraform rendering
_TERRAFORM_TARGETS = {"local": "rh_iac.providers.local.terraform"}


def terraform_target(provider: str) -> ModuleType:
    """The module that renders ``provider``'s resources for the Terraform engine."""
    try:
        return importlib.import_module(_TERRAFORM_TARGETS[provider])
    except KeyError:
        raise EngineNotAvailableError(
            f"provider {provider!r} cannot be deployed yet: the Terraform engine deploys provider 'local', and the "
            f"Pulumi rendering of the cloud providers is not built yet. Use provider='local' for now."
        ) from None
