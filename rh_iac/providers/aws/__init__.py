"""Provider ``aws``: a stack's clusters, folders and secrets on AWS, rendered as Pulumi ComponentResources
(:mod:`rh_iac.providers.aws.pulumi`; imported on use, so ``import rh_iac`` never loads pulumi_aws)."""
