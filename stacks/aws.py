"""The AWS stack: a TLS Dask cluster on EC2, a data folder on S3 (the bucket is created) and a secret.

Machines, region and the CIDR allowlist come from the Pulumi stack config (Pulumi.aws-dev.yaml); a field given here
wins over the config. Deploy with `pulumi up -s aws-dev` or `invoke deploy --engine pulumi --stack aws-dev`.
"""

from rh_iac import Cluster, Env, Folder, Secret, Stack, Table

with Stack("aws", provider="aws", description="Dask on EC2, data on S3") as stack:
    env = Env("dask-env", packages=["pandas", "pyarrow", "s3fs"])
    cluster = Cluster("aws-cluster", env=env, autostop_mins=60)
    datasets = Folder("aws-datasets")
    flights = Table("aws-flights", folder=datasets)
    token = Secret("aws-demo-token", from_env="RH_IAC_DEMO_TOKEN", generate=True)
