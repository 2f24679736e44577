"""Providers: how each declared resource becomes infrastructure on one target (local, aws, gcp).

A provider package never imports another's. Engines reach a provider's rendering through :func:`terraform_target`
or :func:`pulumi_target`, which import it lazily so that ``import rh_iac`` stays free of cloud SDKs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from rh_iac.errors import EngineNotAvailableError

#: provider name -> module holding its Terraform rendering
_TERRAFORM_TARGETS = {"local": "rh_iac.providers.local.terraform"}
#: provider name -> module holding its Pulumi rendering (``OUTPUTS`` and ``render(stack, state_dir)``)
_PULUMI_TARGETS = {
    "local": "rh_iac.providers.local.pulumi",
    "aws": "rh_iac.providers.aws.pulumi",
    "gcp": "rh_iac.providers.gcp.pulumi",
}


def terraform_target(provider: str) -> ModuleType:
    """The module that renders ``provider``'s resources for the Terraform engine."""
    try:
        return importlib.import_module(_TERRAFORM_TARGETS[provider])
    except KeyError:
        if provider in _PULUMI_TARGETS:
            raise EngineNotAvailableError(
                f"provider {provider!r} is rendered for Pulumi only: the Terraform engine deploys provider 'local'. "
                f"Deploy it with the Pulumi engine: `invoke deploy --engine pulumi --stack <s>` (s: the Pulumi stack, "
                f"e.g. {provider}-dev)."
            ) from None
        raise EngineNotAvailableError(
            f"provider {provider!r} has no Terraform rendering; known providers: {', '.join(sorted(_PULUMI_TARGETS))}."
        ) from None


def pulumi_target(provider: str) -> ModuleType:
    """The module that renders ``provider``'s resources inside a Pulumi program."""
    try:
        module = _PULUMI_TARGETS[provider]
    except KeyError:
        raise EngineNotAvailableError(
            f"provider {provider!r} has no Pulumi rendering; known providers: {', '.join(sorted(_PULUMI_TARGETS))}."
        ) from None
    return importlib.import_module(module)
