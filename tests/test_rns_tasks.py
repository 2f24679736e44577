"""`invoke rns.ls / show / history / diff / rollback / unpin`, run as a user runs them, in a project."""

from __future__ import annotations

import json

import pytest

from rh_iac.rns import GitRNS

pytestmark = pytest.mark.timeout(300)


def cluster(workers: int) -> dict:
    spec = {"workers": workers, "min_workers": None, "max_workers": None, "threads_per_worker": 1,
            "memory_limit": "auto", "autostop_mins": 60, "env": None}
    return {"schema_version": 1, "name": "dev-cluster", "type": "cluster", "provider": "local", "stack": "local",
            "engine": "terraform", "spec": spec, "outputs": {}, "status": "deployed"}


@pytest.fixture
def recorded(project):
    """A project whose RNS holds two versions of dev-cluster, a group folder's table and a nested record."""
    rns = GitRNS(project.root)
    rns.write(cluster(2))
    rns.commit("rns: deploy stack local")
    rns.write(cluster(1))
    rns.write({"schema_version": 1, "name": "datasets", "type": "folder", "spec": {"path": None}}, folder="/ml")
    rns.write({"schema_version": 1, "name": "flights", "type": "table", "spec": {"folder": "datasets"}},
              folder="/ml/sub")
    rns.commit("rns: deploy stack local (1 update)")
    return project


def test_ls_lists_every_folder_as_a_table_and_as_json(recorded) -> None:
    table = recorded.invoke("rns.ls").stdout
    for text in ("~/dev-cluster", "/ml/datasets", "/ml/sub/flights", "cluster", "deployed"):
        assert text in table
    rows = json.loads(recorded.invoke("rns.ls", "--json").stdout)
    assert [r["address"] for r in rows] == ["~/dev-cluster", "/ml/datasets", "/ml/sub/flights"]
    assert rows[0] == {"address": "~/dev-cluster", "type": "cluster", "stack": "local", "status": "deployed",
                       "pinned": None}
    only = json.loads(recorded.invoke("rns.ls", "--folder", "/ml/sub", "--json").stdout)
    assert [r["address"] for r in only] == ["/ml/sub/flights"]


def test_show_prints_the_record_and_names_errors(recorded) -> None:
    shown = json.loads(recorded.invoke("rns.show", "dev-cluster", "--json").stdout)
    assert shown == cluster(1)
    assert "/ml/sub/flights" in recorded.invoke("rns.show", "/ml/sub/flights").stdout
    missing = recorded.invoke("rns.show", "dev-clustr", check=False)
    assert missing.returncode == 1 and "ResourceNotFoundError: no RNS record for 'dev-clustr'" in missing.stderr
    assert "close matches: ~/dev-cluster" in missing.stderr and "Traceback" not in missing.stderr
    path = recorded.root / "rns" / "dev-cluster.json"
    path.write_text(path.read_text().replace('"workers": 1', '"workers": "two"'))
    broken = recorded.invoke("rns.show", "dev-cluster", check=False)
    assert broken.returncode == 1
    assert ("RecordFieldError: rns/dev-cluster.json: spec.workers must be an integer or null, got 'two'; fix it "
            "or restore it with `invoke rns.rollback dev-cluster 1`") in " ".join(broken.stderr.split())


def test_history_and_diff(recorded) -> None:
    table = " ".join(recorded.invoke("rns.history", "dev-cluster").stdout.split())
    assert "spec.workers 2 -> 1" in table and "created" in table and "rns: deploy stack local" in table
    versions = json.loads(recorded.invoke("rns.history", "~/dev-cluster", "--json").stdout)
    assert [v["changes"] for v in versions] == [["spec.workers 2 -> 1"], ["created"]]
    diff = recorded.invoke("rns.diff", "dev-cluster").stdout
    assert "~ spec.workers: 2 -> 1" in diff and '-    "workers": 2' in diff and '+    "workers": 1' in diff
    same = recorded.invoke("rns.diff", "dev-cluster", "--v1", "0").stdout
    assert "no changes" in same
    bad = recorded.invoke("rns.diff", "dev-cluster", "--v1", "9", check=False)
    assert bad.returncode == 1 and "VersionNotFoundError" in bad.stderr and "has 2 versions" in bad.stderr


def test_rollback_and_unpin_commit_rns_changes(recorded) -> None:
    first = json.loads(recorded.invoke("rns.history", "dev-cluster", "--json").stdout)[-1]["commit"]
    out = recorded.invoke("rns.rollback", "dev-cluster", "1").stdout
    assert f"pinned to {first[:12]}" in out and "invoke deploy --stack local" in out
    record = json.loads((recorded.root / "rns" / "dev-cluster.json").read_text())
    assert record["spec"]["workers"] == 2 and record["pinned"]["version"] == first
    assert recorded.git("log", "-1", "--format=%s").strip() == f"rns: rollback dev-cluster to {first[:12]}"
    assert json.loads(recorded.invoke("rns.ls", "--json").stdout)[0]["pinned"] == first
    assert recorded.invoke("rns.unpin", "dev-cluster").stdout.strip() == "unpinned dev-cluster"
    assert "pinned" not in json.loads((recorded.root / "rns" / "dev-cluster.json").read_text())
    assert recorded.invoke("rns.unpin", "dev-cluster").stdout.strip() == "dev-cluster was not pinned"
    assert recorded.git("status", "--porcelain").strip() == ""


def test_the_everyday_tasks_are_still_there(recorded) -> None:
    listing = recorded.invoke("--list").stdout
    for name in ("deploy", "preview", "status", "destroy", "demo", "test", "rns.ls", "rns.show", "rns.history",
                 "rns.diff", "rns.rollback", "rns.unpin"):
        assert f"  {name} " in listing or f"  {name}\n" in listing, name
