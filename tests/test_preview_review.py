"""`invoke preview --markdown / --json`: the plan and the RNS diff as a PR comment and as versioned JSON.

Every preview here is a real one (the Terraform engine planning a deployed local stack); the changes of each kind are
made the way a user makes them: editing the stack file, exporting a new secret value, killing a worker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from conftest import CANARY, pid_alive
from rh_iac import operations, review
from rh_iac.errors import ReviewOutputError
from rh_iac.project import Project

pytestmark = pytest.mark.timeout(900)

#: a new value for the stack's secret: the preview plans a fingerprint update and must never show the value
NEW_CANARY = CANARY + "-rotated"

EDITED_STACK = '''
from rh_iac import Cluster, Folder, Secret, Stack

with Stack("local", provider="local") as stack:
    Cluster("dev-cluster", workers=1)                               # update in place: 2 -> 1
    datasets = Folder("datasets", path="{root}/lake|v2`x")          # path forces a replace (odd characters on purpose)
    Folder("extra")                                                 # create
    Secret("demo-token", from_env="RH_IAC_DEMO_TOKEN", generate=True)
    # Table("flights") removed: delete
'''


def _state(proj) -> dict:
    doc = json.loads((proj.root / ".rh_iac/local/terraform/terraform.tfstate").read_text())
    return {r["name"]: r["instances"][0]["attributes"] for r in doc["resources"]}


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def _table_rows(markdown: str, header: str) -> list[str]:
    lines = markdown.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def _assert_portable_and_secret_free(proj, *texts: str) -> None:
    for text in texts:
        assert str(proj.root) not in text and proj.root.as_uri() not in text
        assert str(proj.home) not in text
        assert CANARY not in text and NEW_CANARY not in text


@pytest.fixture
def in_project(deployed_project, monkeypatch):
    """Library calls made from this process see the deployed project and its secret store."""
    monkeypatch.setenv("RH_IAC_HOME", str(deployed_project.home))
    monkeypatch.setenv("RH_IAC_PROJECT", str(deployed_project.root))
    monkeypatch.setenv("RH_IAC_DEMO_TOKEN", CANARY)
    return deployed_project


def test_first_preview_is_all_creates_and_new_records(project, monkeypatch):
    monkeypatch.setenv("RH_IAC_HOME", str(project.home))
    monkeypatch.setenv("RH_IAC_DEMO_TOKEN", CANARY)
    result = operations.preview("local", project=Project(project.root))
    doc = review.preview_json(result)
    assert doc["schema"] == 1 and doc["stack"] == "local" and doc["destroy"] is False
    assert doc["summary"] == {"create": 4, "update": 0, "replace": 0, "delete": 0, "drift": 0}
    assert [c["address"] for c in doc["changes"]] == sorted(c["address"] for c in doc["changes"])
    assert {e["name"]: e["change"] for e in doc["rns"]} == {
        "datasets": "new", "demo-token": "new", "dev-cluster": "new", "flights": "new"}
    workers = next(f for f in next(e for e in doc["rns"] if e["name"] == "dev-cluster")["fields"]
                   if f["field"] == "spec.workers")
    assert workers == {"field": "spec.workers", "before": None, "after": 2}

    md = review.preview_markdown(result)
    assert md.startswith("### rh_iac preview: stack `local`\n")
    assert "**Plan:** 4 to create, 0 to update, 0 to replace, 0 to delete." in md
    assert "Drift" not in md
    assert "| `+` | create | `rhlocal_dask_cluster.dev-cluster` | " in md and "`workers` = `2`" in md
    assert "<summary>RNS records: 4 changes (4 new)</summary>" in md
    assert "- `spec.workers`: `2`" in md
    _assert_portable_and_secret_free(project, md, review.dumps_json(result))
    assert not (project.root / "rns").exists()  # a preview writes nothing


def test_update_replace_create_delete_and_a_rotated_secret(in_project, monkeypatch):
    proj = in_project
    stack_file = proj.root / "stacks" / "local.py"
    original = stack_file.read_text()
    rns_before = {p.name: p.read_text() for p in (proj.root / "rns").glob("*.json")}
    commits = proj.commits()
    stack_file.write_text(EDITED_STACK.replace("{root}", str(proj.root)))
    monkeypatch.setenv("RH_IAC_DEMO_TOKEN", NEW_CANARY)
    try:
        result = operations.preview("local")
    finally:
        stack_file.write_text(original)
    doc = review.preview_json(result)

    assert doc["summary"] == {"create": 1, "update": 2, "replace": 1, "delete": 1, "drift": 0}
    actions = {c["address"]: c["action"] for c in doc["changes"]}
    assert actions == {"rhlocal_dask_cluster.dev-cluster": "update", "rhlocal_folder.datasets": "replace",
                       "rhlocal_folder.extra": "create", "rhlocal_secret.demo-token": "update",
                       "rhlocal_table.flights": "delete"}
    assert list(actions) == sorted(actions)
    cluster = next(c for c in doc["changes"] if c["name"] == "dev-cluster")
    assert cluster["attributes"]["workers"] == {"before": 2, "after": 1, "known_after_apply": False}
    datasets = next(c for c in doc["changes"] if c["name"] == "datasets")
    assert datasets["attributes"]["path"]["after"] == "{project}/lake|v2`x"
    assert datasets["attributes"]["url"]["known_after_apply"] is True
    token = next(c for c in doc["changes"] if c["name"] == "demo-token")
    assert set(token["attributes"]) >= {"fingerprint"}  # the new value shows as a new keyed fingerprint only

    rns = {e["name"]: e for e in doc["rns"]}
    assert {n: e["change"] for n, e in rns.items()} == {
        "datasets": "updated", "demo-token": "updated", "dev-cluster": "updated", "extra": "new",
        "flights": "destroyed"}
    assert {"field": "spec.workers", "before": 2, "after": 1} in rns["dev-cluster"]["fields"]
    assert {"field": "spec.path", "before": None, "after": "{project}/lake|v2`x"} in rns["datasets"]["fields"]
    assert {"field": "status", "before": "deployed", "after": "destroyed"} in rns["flights"]["fields"]
    assert [e["name"] for e in doc["rns"]] == sorted(rns)

    md = review.preview_markdown(result)
    assert "**Plan:** 1 to create, 2 to update, 1 to replace, 1 to delete. **RNS:** 5 records to change." in md
    rows = _table_rows(md, "| | action | resource | changes |")
    assert [r.split(" | ")[2] for r in rows] == [f"`{a}`" for a in sorted(actions)]
    assert all(_unescaped_pipes(r) == 5 for r in rows), rows  # the '|' in the folder path cannot break the table
    update = next(r for r in rows if "`rhlocal_dask_cluster.dev-cluster`" in r)
    assert update.startswith("| `~` | update | ") and "`workers`: `2` → `1`" in update
    assert "| `-/+` | replace | `rhlocal_folder.datasets` |" in md and "`` {project}/lake\\|v2`x ``" in md
    assert "| `+` | create | `rhlocal_folder.extra` | `name` = `extra` |" in md
    assert "| `-` | delete | `rhlocal_table.flights` |" in md
    details = md[md.index("<details>"):md.index("</details>")]
    assert "(2 new" not in details and "1 new, 3 updated, 1 destroyed" in details
    assert "- `spec.workers`: `2` → `1`" in details
    assert "**`flights`** (destroyed)" in details and "- `status`: `deployed` → `destroyed`" in details
    assert "- `outputs.url`: `file://{project}/.rh_iac/local/folders/datasets/flights` → `null`" in details
    assert "- `outputs`:" not in details
    assert review.preview_markdown(result) == md and review.dumps_json(result) == review.dumps_json(result)
    _assert_portable_and_secret_free(proj, md, review.dumps_json(result))

    # a preview changes nothing: no RNS file, no commit
    assert {p.name: p.read_text() for p in (proj.root / "rns").glob("*.json")} == rns_before
    assert proj.commits() == commits


def test_destroy_preview(in_project):
    result = operations.preview("local", destroy=True)
    doc = review.preview_json(result)
    assert doc["destroy"] is True
    assert doc["summary"] == {"create": 0, "update": 0, "replace": 0, "delete": 4, "drift": 0}
    assert {e["change"] for e in doc["rns"]} == {"destroyed"} and len(doc["rns"]) == 4
    md = review.preview_markdown(result)
    assert md.startswith("### rh_iac destroy preview: stack `local`\n")
    assert "**Plan:** 0 to create, 0 to update, 0 to replace, 4 to delete." in md
    _assert_portable_and_secret_free(in_project, md, review.dumps_json(result))


def test_killed_worker_is_called_out_as_drift_in_markdown_and_json_via_the_task(in_project, tmp_path):
    proj = in_project
    worker = _state(proj)["dev-cluster"]["worker_pids"][0]
    os.killpg(worker, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(worker)

    out_file = tmp_path / "preview.json"
    proc = proj.invoke("preview", "--markdown", "--json", str(out_file))
    md = proc.stdout
    doc = json.loads(out_file.read_text())
    assert doc["schema"] == 1 and doc["summary"]["drift"] == 1 and doc["summary"]["update"] == 1
    (drift,) = doc["drift"]
    assert drift["address"] == "rhlocal_dask_cluster.dev-cluster" and drift["action"] == "update"
    assert drift["attributes"]["workers"]["before"] == 2 and drift["attributes"]["workers"]["after"] == 1
    (change,) = doc["changes"]
    assert change["attributes"]["workers"] == {"before": 1, "after": 2, "known_after_apply": False}

    assert md.startswith("### rh_iac preview: stack `local`\n")
    assert "> **Drift:** 1 resource changed outside rh_iac since the last apply" in md
    drift_rows = _table_rows(md, "| resource | found changed |")
    assert len(drift_rows) == 1 and "`rhlocal_dask_cluster.dev-cluster`" in drift_rows[0]
    assert "`workers`: `2` → `1`" in drift_rows[0]
    assert "| `~` | update | `rhlocal_dask_cluster.dev-cluster` | " in md and "`workers`: `1` → `2`" in md
    assert md.index("**Drift:**") < md.index("| | action | resource | changes |")  # called out before the plan

    # the task's JSON is the library's, byte for byte; --json - prints it alone; the terminal view stays rich
    assert out_file.read_text() == review.dumps_json(operations.preview("local"))
    alone = proj.invoke("preview", "--json", "-").stdout
    assert json.loads(alone) == doc
    terminal = proj.invoke("preview").stdout
    assert "drifted" in terminal and "###" not in terminal
    _assert_portable_and_secret_free(proj, md, out_file.read_text(), alone, terminal)


def test_bad_output_options_fail_before_the_preview_runs(in_project, tmp_path):
    proj = in_project
    proc = proj.invoke("preview", "--markdown", "--json", "-", check=False)
    assert proc.returncode == 1 and "ReviewOutputError" in proc.stderr and "--json preview.json" in proc.stderr
    missing = tmp_path / "no-such-folder" / "preview.json"
    proc = proj.invoke("preview", "--json", str(missing), check=False)
    assert proc.returncode == 1 and "ReviewOutputError" in proc.stderr and "does not exist" in proc.stderr
    assert not missing.parent.exists()
    with pytest.raises(ReviewOutputError, match="both write to stdout"):
        review.check_targets(markdown=True, json_path="-")
    review.check_targets(markdown=True, json_path=str(tmp_path / "ok.json"))  # a file beside Markdown is fine
    assert not list(Path(proj.root / ".rh_iac" / "local" / "terraform").glob("*.tfplan"))  # no plan was left behind
