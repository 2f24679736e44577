"""The local stack: the embedded default, no cloud account needed.

A real Dask cluster of local processes (TLS, 2 workers), a data folder with the flights table, and a secret whose
value comes from $RH_IAC_DEMO_TOKEN (or is generated once when unset).
"""

from rh_iac import Cluster, Folder, Secret, Stack, Table

with Stack("local", provider="local", description="Dask on this machine") as stack:
    cluster = Cluster("dev-cluster", workers=2)
    datasets = Folder("datasets")
    flights = Table("flights", folder=datasets)
    token = Secret("demo-token", from_env="RH_IAC_DEMO_TOKEN", generate=True)
