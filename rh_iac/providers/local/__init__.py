"""The local provider: a real Dask cluster of local processes, local folders and tables, an encrypted local secret.

Served to Terraform as a provider plugin written in Python (:mod:`.plugin`); the drivers (:mod:`.dask_cluster`,
:mod:`.storage`, :mod:`.secret`) hold the behaviour and know nothing of the engine.
"""
