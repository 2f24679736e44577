"""The team's own code, run on the cluster by rh_iac (its files are synced to the workers; nothing to package)."""
