"""The Pulumi program of rh_iac stacks: ``pulumi up -s <stack>`` deploys the stack file the Pulumi stack selects.

Config ``rh_iac:stack`` in ``Pulumi.<stack>.yaml`` names the stack file (``rh_iac:stack: aws`` -> stacks/aws.py);
without it the Pulumi stack's own name does (``pulumi up -s local`` -> stacks/local.py). ``invoke deploy --engine
pulumi`` runs the very same function through the Automation API.
"""

from rh_iac.engines.pulumi import main

main()
