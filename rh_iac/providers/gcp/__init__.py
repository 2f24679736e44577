"""Provider ``gcp``: a stack's clusters, folders and secrets on Google Cloud, rendered as Pulumi ComponentResources
(:mod:`rh_iac.providers.gcp.pulumi`; imported on use, so ``import rh_iac`` never loads pulumi_gcp)."""
