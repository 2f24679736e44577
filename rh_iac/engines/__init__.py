"""Engines: who plans, applies and destroys a stack and keeps its state (Terraform now; Pulumi for the clouds)."""
