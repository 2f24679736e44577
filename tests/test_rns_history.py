"""RNS history, read_at, diff and rollback pins; and the must-show: a rollback that the next deploy really applies."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from rns_helpers import git, hermetic_git, init_repo

from conftest import CANARY
from rh_iac.errors import RecordFieldError, ResourceNotFoundError, RNSError, VersionNotFoundError
from rh_iac.model import Cluster, Folder, Stack, Table
from rh_iac.rns import GitRNS
from rh_iac.rns.history import apply_pins


def cluster(workers: int = 2, status: str = "deployed", address: str = "tls://127.0.0.1:1") -> dict:
    spec = {"workers": workers, "min_workers": None, "max_workers": None, "threads_per_worker": 1,
            "memory_limit": "auto", "autostop_mins": 60, "env": None}
    return {"schema_version": 1, "name": "dev-cluster", "type": "cluster", "provider": "local", "stack": "local",
            "engine": "terraform", "spec": spec, "outputs": {"scheduler_address": address}, "status": status}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hermetic_git(tmp_path, monkeypatch)
    return init_repo(tmp_path / "project")


@pytest.fixture
def three_versions(repo: Path) -> tuple[GitRNS, list[str]]:
    rns = GitRNS(repo)
    shas = []
    for record, message in ((cluster(2), "deploy 1"), (cluster(1, address="tls://127.0.0.1:2"), "deploy 2"),
                            (cluster(1, "destroyed", address="tls://127.0.0.1:2"), "destroy")):
        rns.write(record)
        shas.append(rns.commit(message))
    return rns, shas


def test_history_lists_versions_newest_first_with_what_changed(three_versions: tuple[GitRNS, list[str]]) -> None:
    rns, shas = three_versions
    versions = rns.history("dev-cluster")
    assert [v.commit for v in versions] == shas[::-1]
    assert [v.message for v in versions] == ["destroy", "deploy 2", "deploy 1"]
    assert versions[0].changes == ('status "deployed" -> "destroyed"',)
    assert versions[1].summary == ('outputs.scheduler_address "tls://127.0.0.1:1" -> "tls://127.0.0.1:2", '
                                   'spec.workers 2 -> 1')
    assert versions[2].changes == ("created",)
    assert versions[0].author == "Test User <test@example.com>" and versions[0].time[:2] == "20"
    assert versions[2].record == cluster(2)


def test_read_at_by_index_and_sha_prefix(three_versions: tuple[GitRNS, list[str]]) -> None:
    rns, shas = three_versions
    assert rns.read_at("dev-cluster", 0)["status"] == "destroyed"
    assert rns.read_at("dev-cluster", "2")["spec"]["workers"] == 2
    assert rns.read_at("~/dev-cluster", shas[1][:7])["outputs"]["scheduler_address"] == "tls://127.0.0.1:2"
    with pytest.raises(VersionNotFoundError, match=r"has 3 versions .* no version 3"):
        rns.read_at("dev-cluster", 3)
    with pytest.raises(VersionNotFoundError, match=r"'deadbeef' is not a version of it"):
        rns.read_at("dev-cluster", "deadbeef")
    with pytest.raises(VersionNotFoundError, match="at least 4 characters"):
        rns.read_at("dev-cluster", "abc")  # a non-numeric short prefix is refused, not guessed


def test_diff_is_field_level_and_unified(three_versions: tuple[GitRNS, list[str]]) -> None:
    rns, shas = three_versions
    d = rns.diff("dev-cluster", 2, 1)
    assert [(c.field, c.before, c.after) for c in d.changes] == [
        ("outputs.scheduler_address", "tls://127.0.0.1:1", "tls://127.0.0.1:2"), ("spec.workers", 2, 1)]
    assert '~ spec.workers: 2 -> 1' in str(d)
    assert '-    "workers": 2' in d.text and '+    "workers": 1' in d.text
    assert d.text.startswith(f"--- ~/dev-cluster@{shas[0][:12]}")
    assert not rns.diff("dev-cluster", 0)  # v2 defaults to the file on disk, which is the newest version
    path = rns.path("dev-cluster")
    path.write_text(path.read_text().replace('"autostop_mins": 60', '"autostop_mins": 5'))
    assert "~ spec.autostop_mins: 60 -> 5" in str(rns.diff("dev-cluster", 0))


def test_rollback_pins_the_old_spec_and_commits_only_rns(three_versions: tuple[GitRNS, list[str]], repo: Path) -> None:
    rns, shas = three_versions
    (repo / "README.md").write_text("unrelated edit\n")
    restored = rns.rollback("dev-cluster", shas[0][:8])
    assert restored["spec"]["workers"] == 2
    assert restored["status"] == "destroyed" and restored["outputs"] == {"scheduler_address": "tls://127.0.0.1:2"}
    assert restored["pinned"]["version"] == shas[0] and restored["pinned"]["spec"] == cluster(2)["spec"]
    assert restored["pinned"]["by"] == "test" and restored["pinned"]["time"].endswith("+00:00")
    assert rns.read("dev-cluster") == restored
    assert git(repo, "log", "-1", "--format=%s") == f"rns: rollback dev-cluster to {shas[0][:12]}"
    assert git(repo, "show", "--name-only", "--format=", "HEAD") == "rns/dev-cluster.json"
    assert git(repo, "status", "--porcelain") == "M README.md"
    assert rns.history("dev-cluster")[0].summary.startswith("+pinned")
    assert rns.unpin("dev-cluster") is True and "pinned" not in rns.read("dev-cluster")
    assert rns.unpin("dev-cluster") is False
    assert git(repo, "log", "-1", "--format=%s") == "rns: unpin dev-cluster"


def test_rollback_of_saved_code_restores_the_record_as_it_was(repo: Path) -> None:
    rns = GitRNS(repo)
    base = {"schema_version": 1, "name": "double", "type": "function", "provider": "local", "outputs": {},
            "status": "deployed"}
    rns.write({**base, "spec": {"module": "jobs", "qualname": "double", "cluster": "c"}})
    first = rns.commit("save 1")
    rns.write({**base, "spec": {"module": "jobs", "qualname": "double_v2", "cluster": "c"}})
    rns.commit("save 2")
    assert rns.rollback("double", 1) == {**base, "spec": {"module": "jobs", "qualname": "double", "cluster": "c"}}
    assert rns.read("double")["spec"]["qualname"] == "double"
    assert first in [v.commit for v in rns.history("double")]


def test_history_of_deleted_and_unknown_records(repo: Path) -> None:
    rns = GitRNS(repo)
    rns.write(cluster())
    rns.commit("add")
    rns.remove("dev-cluster")
    rns.commit("remove")
    versions = rns.history("dev-cluster")
    assert [v.changes for v in versions] == [("deleted",), ("created",)]
    assert rns.read_at("dev-cluster", 1) == cluster()
    with pytest.raises(VersionNotFoundError, match="deleted at version"):
        rns.read_at("dev-cluster", 0)
    assert rns.history("never-was") == []
    with pytest.raises(ResourceNotFoundError):
        rns.rollback("dev-cluster", 1)  # nothing to restore into: redeploy instead


def test_history_of_1000_versions_is_fast(repo: Path) -> None:
    """1,000 commits of one record (made with git fast-import), listed with field changes in well under a second."""
    lines = []
    for i in range(1000):
        data = json.dumps(cluster(workers=i % 7), indent=2, sort_keys=True) + "\n"
        lines += ["commit refs/heads/main", f"committer T <t@t> {1_700_000_000 + i} +0000", f"data {len(f'v{i}')}",
                  f"v{i}", *(["from refs/heads/main^0"] if i == 0 else []),
                  "M 100644 inline rns/dev-cluster.json", f"data {len(data.encode())}", data]
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input="\n".join(lines).encode(), check=True)
    subprocess.run(["git", "reset", "-q", "--hard"], cwd=repo, check=True)
    rns = GitRNS(repo)
    start = time.perf_counter()
    versions = rns.history("dev-cluster")
    elapsed = time.perf_counter() - start
    assert len(versions) == 1000 and versions[0].message == "v999" and versions[-1].changes == ("created",)
    assert versions[0].changes == (f"spec.workers {998 % 7} -> {999 % 7}",)
    assert elapsed < 1.5, f"history of 1,000 versions took {elapsed:.2f} s"  # goal < 1 s; the CI box is shared


def test_apply_pins_rebuilds_pinned_resources_and_their_dependents(repo: Path) -> None:
    rns = GitRNS(repo)
    with Stack("local") as stack:
        Cluster("dev-cluster", workers=1)
        folder = Folder("datasets", path="/new")
        Table("flights", folder=folder)
    rns.write({**cluster(1), "pinned": {"version": "a" * 40, "spec": cluster(2)["spec"], "by": "test"}})
    rns.write({"schema_version": 1, "name": "datasets", "type": "folder", "provider": "local", "stack": "local",
               "spec": {"path": "/new"}, "pinned": {"version": "b" * 40, "spec": {"path": "/old"}}})
    pins, notices = apply_pins(stack, rns)
    assert set(pins) == {"dev-cluster", "datasets"}
    assert stack["dev-cluster"].workers == 2 and stack["dev-cluster"].stack is stack
    assert stack["datasets"].path == "/old" and stack["flights"].folder is stack["datasets"]  # dependents follow
    text = str(next(n for n in notices if n.resource == "dev-cluster"))
    assert text.startswith("Cluster 'dev-cluster' is pinned to version aaaaaaaaaaaa by rollback (test): the stack "
                           "file declares workers=1, the pin keeps workers=2")
    assert "`invoke rns.unpin dev-cluster`" in text
    with Stack("local") as again:
        Cluster("dev-cluster", workers=2)  # the declaration now matches the pin: no pin in force
    assert apply_pins(again, rns) == ({}, [])


def test_a_pin_from_another_stack_is_ignored(repo: Path) -> None:
    rns = GitRNS(repo)
    rns.write({**cluster(1), "stack": "other", "pinned": {"version": "a" * 40, "spec": cluster(2)["spec"]}})
    with Stack("local") as stack:
        Cluster("dev-cluster", workers=1)
    assert apply_pins(stack, rns) == ({}, []) and stack["dev-cluster"].workers == 1


# --- the must-show: rollback then deploy restores the previous cluster spec -----------------------------------------
def _live_workers(proj) -> int:
    out = proj.python("import rh_iac\n"
                      "client = rh_iac.load('dev-cluster').client()\n"
                      "print(len(client.scheduler_info()['workers']))\n"
                      "client.close()\n").stdout
    return int(out.split()[-1])


def _wait_workers(proj, n: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = _live_workers(proj)
        if count == n or time.monotonic() > deadline:
            return count
        time.sleep(1)


@pytest.mark.timeout(900)
def test_rollback_then_deploy_restores_the_previous_cluster_spec(project) -> None:
    proj = project
    env = {"RH_IAC_DEMO_TOKEN": CANARY, "RH_IAC_USER": "reviewer"}
    stack_file = proj.root / "stacks" / "local.py"
    try:
        proj.invoke("deploy", **env)
        assert _wait_workers(proj, 2) == 2
        first = proj.git("log", "-1", "--format=%H").strip()

        stack_file.write_text(stack_file.read_text().replace('Cluster("dev-cluster", workers=2)',
                                                             'Cluster("dev-cluster", workers=1)'))
        proj.invoke("deploy", **env)
        assert _wait_workers(proj, 1) == 1
        assert json.loads((proj.root / "rns/dev-cluster.json").read_text())["spec"]["workers"] == 1

        out = proj.invoke("rns.rollback", "dev-cluster", first[:10], **env).stdout
        assert f"pinned to {first[:12]}" in out
        assert proj.git("log", "-1", "--format=%s").strip() == f"rns: rollback dev-cluster to {first[:12]}"
        preview = proj.invoke("preview", **env).stdout
        assert "pinned to version" in " ".join(preview.split())

        deployed = proj.invoke("deploy", **env).stdout
        flat = " ".join(deployed.split())
        assert ("Cluster 'dev-cluster' is pinned to version " + first[:12]) in flat
        assert "the stack file declares workers=1, the pin keeps workers=2" in flat
        assert _wait_workers(proj, 2) == 2  # the rollback was applied by the engine, not only written down
        record = json.loads((proj.root / "rns/dev-cluster.json").read_text())
        assert record["spec"]["workers"] == 2 and record["pinned"]["version"] == first
        assert record["pinned"]["by"] == "reviewer" and record["status"] == "deployed"

        history = proj.invoke("rns.history", "dev-cluster", "--json", **env).stdout
        steps = [(v["message"], v["changes"]) for v in json.loads(history)]
        messages = [m for m, _ in steps]
        # the rollback already recorded what the deploy then applied, so that deploy changed no field of the record
        assert messages[0] == f"rns: rollback dev-cluster to {first[:12]}"
        assert "spec.workers 1 -> 2" in steps[0][1] and "+pinned" in steps[0][1]
        assert messages[1].startswith("rns: deploy stack local") and "spec.workers 2 -> 1" in steps[1][1]
        assert messages[2].startswith("rns: deploy stack local") and steps[2][1] == ["created"]
        assert len(messages) == 3

        # the stack file catches up: the pin is dropped by itself, nothing else changes
        stack_file.write_text(stack_file.read_text().replace('workers=1', 'workers=2'))
        out = proj.invoke("deploy", **env).stdout
        assert "pinned" not in out
        record = json.loads((proj.root / "rns/dev-cluster.json").read_text())
        assert "pinned" not in record and record["spec"]["workers"] == 2
        assert _live_workers(proj) == 2
        latest = json.loads(proj.invoke("rns.history", "dev-cluster", "--json", **env).stdout)[0]
        assert latest["message"].startswith("rns: deploy stack local") and latest["changes"] == ["-pinned"]
        for sha in proj.git("rev-list", f"{first}^..HEAD").split():
            changed = proj.git("show", "--name-only", "--format=", sha).split()
            assert all(p.startswith("rns/") for p in changed), changed
    finally:
        proj.invoke("destroy", check=False, **env)


def test_rollback_errors_are_named(repo: Path) -> None:
    rns = GitRNS(repo)
    with pytest.raises(ResourceNotFoundError):
        rns.rollback("nothing", 1)
    rns.write(cluster())
    with pytest.raises(VersionNotFoundError, match="no committed versions"):
        rns.rollback("dev-cluster", 1)  # written but never committed
    rns.commit("one")
    rns.write({**cluster(), "type": "folder", "spec": {"path": None}})
    rns.commit("retyped")
    with pytest.raises(RNSError, match="it was a cluster then and is a folder now"):
        rns.rollback("dev-cluster", 1)
    # a version that breaks the metadata standard is refused before anything is written or committed
    rns.write({**cluster(), "spec": {**cluster()["spec"], "workers": "two"}})
    rns.commit("hand-broken")
    rns.write(cluster(3))
    rns.commit("fixed")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout
    with pytest.raises(RecordFieldError, match=r"dev-cluster.json at version \w+: spec.workers must be an integer"):
        rns.rollback("dev-cluster", 1)
    assert rns.read("dev-cluster")["spec"]["workers"] == 3
    assert subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout == head


def test_an_invalid_pin_fails_before_deploy_with_the_fix(repo: Path) -> None:
    rns = GitRNS(repo)
    bad = {**cluster(2)["spec"], "workers": -3}
    rns.write({**cluster(1), "pinned": {"version": "c" * 40, "spec": bad}})
    with Stack("local") as stack:
        Cluster("dev-cluster", workers=1)
    with pytest.raises(RNSError, match=r"^rns/dev-cluster.json: the rollback pin of Cluster 'dev-cluster' .*"
                                       r"`invoke rns.unpin dev-cluster`"):
        apply_pins(stack, rns)
    assert stack["dev-cluster"].workers == 1
