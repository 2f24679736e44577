"""rh_iac.versions: the client/cluster version check, against the real mutual-TLS LocalCluster of conftest."""

from __future__ import annotations

import subprocess
import sys

import cloudpickle
import dask
import distributed
import pytest

import rh_iac
from rh_iac import compute, versions
from rh_iac.errors import ComputeError, VersionMismatchError

# The helpers below run on the workers: pickle them by value (the workers need not import this test module).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_local_versions_are_this_process():
    got = versions.local_versions()
    assert got == {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "rh_iac": rh_iac.__version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "cloudpickle": cloudpickle.__version__,
    }


def test_local_versions_import_nothing_heavy():
    code = ("import sys, rh_iac.versions as v; d = v.local_versions(); "
            "print(sorted(m for m in ('dask', 'distributed', 'cloudpickle') if m in sys.modules), d['distributed'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]" and out[1] == distributed.__version__


def test_matching_cluster_passes(cluster):
    client = compute.connect(cluster)
    assert versions.check_versions(client, cluster.label) is None
    # ... and it really asked every node: each reported the client's versions.
    workers, scheduler = versions._gather(client)
    assert sorted(workers) == sorted(client.scheduler_info()["workers"]) and len(workers) == 2
    assert scheduler == versions.local_versions()
    assert all(v == versions.local_versions() for v in workers.values())


def test_client_claiming_other_versions_is_refused_with_both_sides(cluster, monkeypatch):
    client = compute.connect(cluster)
    real = versions.local_versions()
    claimed = {**real, "distributed": "2099.1.0", "rh_iac": "9.9.9"}
    # Only this process lies. The workers are separate processes and report their real versions; the
    # LocalCluster's scheduler runs inside this process, so it shares the lie and must not be listed.
    monkeypatch.setattr(versions, "local_versions", lambda: claimed)
    with pytest.raises(VersionMismatchError) as info:
        versions.check_versions(client, cluster.label)
    assert isinstance(info.value, ComputeError)
    message = str(info.value)
    assert message.startswith("Cluster 'c':")
    dist_line = next(line for line in message.splitlines() if line.strip().startswith("distributed:"))
    rh_line = next(line for line in message.splitlines() if line.strip().startswith("rh_iac:"))
    assert "this client 2099.1.0" in dist_line and real["distributed"] in dist_line
    assert "this client 9.9.9" in rh_line and real["rh_iac"] in rh_line
    for address in client.scheduler_info()["workers"]:
        assert address in dist_line
    assert "scheduler" not in message
    assert "dask:" not in message and "cloudpickle:" not in message and "python:" not in message  # only differences
    assert "invoke deploy" in message
    assert f"pip install 'distributed=={real['distributed']}' 'rh_iac=={real['rh_iac']}'" in message


def test_python_micro_differences_pass_minor_differences_do_not(cluster, monkeypatch):
    client = compute.connect(cluster)
    real = versions.local_versions()
    major, minor, micro = sys.version_info[:3]
    versions.check_versions(client, cluster.label, expected={**real, "python": f"{major}.{minor}.{micro + 1}"})
    other = f"{major}.{minor + 1}.0"
    monkeypatch.setattr(versions, "local_versions", lambda: {**real, "python": other})
    with pytest.raises(VersionMismatchError) as info:
        versions.check_versions(client, cluster.label)
    line = next(line for line in str(info.value).splitlines() if line.strip().startswith("python:"))
    assert f"this client {other}" in line and real["python"] in line and "major.minor must match" in line
    assert f"use Python {real['python']}" in str(info.value)


def _set_cloudpickle_version(value):
    import cloudpickle as cp

    old = cp.__version__
    cp.__version__ = value
    return old


def test_one_differing_worker_is_named_alone(cluster):
    """A worker whose loaded cloudpickle really reports another version: only that worker is listed."""
    client = compute.connect(cluster)
    odd, fine = sorted(client.scheduler_info()["workers"])
    old = client.run(_set_cloudpickle_version, "0.0.1", workers=[odd])[odd]
    try:
        with pytest.raises(VersionMismatchError) as info:
            versions.check_versions(client, cluster.label)
    finally:
        client.run(_set_cloudpickle_version, old, workers=[odd])
    line = next(line for line in str(info.value).splitlines() if line.strip().startswith("cloudpickle:"))
    assert f"this client {cloudpickle.__version__}" in line and f"worker {odd}: 0.0.1" in line
    assert fine not in str(info.value)
    versions.check_versions(client, cluster.label)  # restored: passes again


def _hide_versions_module(hide):
    import sys as s

    if hide:
        s.modules.pop("rh_iac.versions", None)
        s.modules["rh_iac.versions"] = None  # importing it now fails, as on a node with an older rh_iac
    else:
        s.modules.pop("rh_iac.versions", None)


def test_worker_that_cannot_report_counts_as_an_rh_iac_mismatch(cluster):
    client = compute.connect(cluster)
    odd = sorted(client.scheduler_info()["workers"])[0]
    client.run(_hide_versions_module, True, workers=[odd])
    try:
        with pytest.raises(VersionMismatchError) as info:
            versions.check_versions(client, cluster.label)
    finally:
        client.run(_hide_versions_module, False, workers=[odd])
    line = next(line for line in str(info.value).splitlines() if line.strip().startswith("rh_iac:"))
    assert odd in line and "could not report" in line
    versions.check_versions(client, cluster.label)
