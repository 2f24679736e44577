"""Pulumi program for rh_iac stacks: ``pulumi up -s <stack>`` runs stacks/<stack>.py.

The Pulumi rendering of the providers (ComponentResources over pulumi-aws / pulumi-gcp, dynamic providers for
local) is not built yet; until it is, this program refuses clearly and names the engine that works.
"""

import pulumi

from rh_iac.errors import EngineNotAvailableError
from rh_iac.project import Project

stack = Project.find().load_stack(pulumi.get_stack())  # validates the declaration even here
raise EngineNotAvailableError(
    f"stack {stack.name!r}: rh_iac's Pulumi rendering is not available yet; deploy with the Terraform engine: "
    f"`invoke deploy --stack {stack.name}`."
)
