"""The GCP stack: a TLS Dask cluster on Compute Engine, a data folder on GCS (the bucket is created) and a secret.

Machines, region and the CIDR allowlist come from the Pulumi stack config (Pulumi.gcp-dev.yaml); a field given here
wins over the config. Deploy with `pulumi up -s gcp-dev` or `invoke deploy --engine pulumi --stack gcp-dev`.
"""

from rh_iac import Cluster, Env, Folder, Secret, Stack, Table

with Stack("gcp", provider="gcp", description="Dask on Compute Engine, data on GCS") as stack:
    env = Env("gcp-dask-env", packages=["pandas", "pyarrow", "gcsfs"])
    cluster = Cluster("gcp-cluster", env=env, autostop_mins=60)
    datasets = Folder("gcp-datasets")
    flights = Table("gcp-flights", folder=datasets)
    token = Secret("gcp-demo-token", from_env="RH_IAC_DEMO_TOKEN", generate=True)
