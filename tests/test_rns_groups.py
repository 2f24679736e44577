"""Groups and access as code: the DSL, nesting, defaults inherited by stacks, refusal of writes, `invoke check`,
sharing as a reviewable change, and RNS commits shared through a git remote (a local bare repository)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import make_project
from rh_iac.errors import (
    AccessDeniedError,
    GitRemoteConflictError,
    GroupDeclarationError,
    UnknownGroupError,
)
from rh_iac.project import Project
from rh_iac.rns import gitremote
from rh_iac.rns.groups import Grant, Group, Groups, check_changes, check_write, load_groups, share

pytestmark = pytest.mark.timeout(300)

GROUPS = '''from rh_iac.rns.groups import Group

Group("platform", members=["root@x.com"], access={"/platform": "write"},
      defaults={"provider": "local", "autostop_mins": 45, "stage": "prod"})
Group("ml", parent="platform", members=["alice@x.com"], access={"/ml": "write", "/shared": "read"},
      defaults={"autostop_mins": 15, "stage": "dev", "storage": "file:///tmp/rh-ml-storage"})
Group("readers", members=["bob@x.com"], access={"/ml": "read"})
'''


def _git(cwd: Path, *args: str, email: str = "t@t") -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": email.split("@")[0], "GIT_AUTHOR_EMAIL": email,
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@x.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def proj(tmp_path, monkeypatch):
    p = make_project(tmp_path)
    (p.root / "stacks/_groups.py").write_text(GROUPS)
    _git(p.root, "add", "stacks/_groups.py")
    _git(p.root, "commit", "-q", "-m", "groups")
    monkeypatch.setenv("RH_IAC_PROJECT", str(p.root))
    monkeypatch.delenv("RH_IAC_RNS_FOLDER", raising=False)
    return p


def test_declarations_are_validated_with_named_errors():
    with pytest.raises(GroupDeclarationError, match="Group 'ml'.*access level 'admin'.*'read' or 'write'"):
        Group("ml", access={"/ml": "admin"})
    with pytest.raises(GroupDeclarationError, match="Group 'ml'.*unknown key 'zone'.*provider, region, storage"):
        Group("ml", defaults={"zone": "a"})
    with pytest.raises(GroupDeclarationError, match="stage 'qa' must be 'dev' or 'prod'"):
        Group("ml", defaults={"stage": "qa"})
    with pytest.raises(GroupDeclarationError, match="provider 'azure' is unknown"):
        Group("ml", defaults={"provider": "azure"})
    with pytest.raises(GroupDeclarationError, match="autostop_mins"):
        Group("ml", defaults={"autostop_mins": 0})
    with pytest.raises(GroupDeclarationError, match="storage 'bucket' must be an fsspec URL"):
        Group("ml", defaults={"storage": "bucket"})
    with pytest.raises(GroupDeclarationError, match="email"):
        Group("ml", members=["alice"])
    with pytest.raises(GroupDeclarationError, match="not an RNS folder"):
        Group("ml", access={"ml": "write"})
    with pytest.raises(UnknownGroupError, match="parent 'nope'.*not declared"):
        Groups({"ml": Group("ml", parent="nope")})
    with pytest.raises(GroupDeclarationError, match="cycle"):
        Groups({"a": Group("a", parent="b"), "b": Group("b", parent="a")})
    with pytest.raises(UnknownGroupError, match="'ghosts'"):
        Groups({}, [Grant("/ml", "ghosts", "read")])


def test_levels_nesting_own_folder_and_open_paths(proj):
    groups = load_groups(proj.root)
    assert groups.members("ml") == {"alice@x.com", "root@x.com"}  # a parent's members are the child's members
    assert groups.level("alice@x.com", "/ml/flights") == "write"
    assert groups.level("root@x.com", "/ml/sub/x") == "write"  # via the parent group, and covering sub-folders
    assert groups.level("alice@x.com", "/shared/x") == "read"
    assert groups.level("alice@x.com", "/platform/x") is None  # access is not inherited upward
    assert groups.level("bob@x.com", "/ml/flights") == "read"
    assert groups.level("BOB@x.com", "/bob/scratch") == "write"  # one's own folder, @
    assert groups.level("bob@x.com", "/elsewhere/x") == "write" and groups.level(None, "~/x") == "write"
    assert groups.defaults("ml") == {"provider": "local", "autostop_mins": 15, "stage": "dev",
                                     "storage": "file:///tmp/rh-ml-storage"}


def test_a_write_to_a_folder_without_write_access_is_refused(proj, monkeypatch):
    check_write("/ml/flights", "alice@x.com")
    with pytest.raises(AccessDeniedError) as info:
        check_write("/ml/flights", "bob@x.com")
    message = str(info.value)
    assert "bob@x.com" in message and "/ml/flights" in message and "'write'" in message and "has read" in message
    assert "alice@x.com (group ml)" in message and "root@x.com (group ml)" in message  # who can grant it
    assert "stacks/_groups.py" in message and "invoke rns.share" in message
    monkeypatch.setenv("RH_IAC_USER_EMAIL", "carol@x.com")
    with pytest.raises(AccessDeniedError, match="carol@x.com may not write /platform/x.*has none"):
        check_write("/platform/x")  # the current user, from the environment


def test_stacks_inherit_their_groups_defaults_unless_they_override(proj):
    proj.write_stack("mlstack", '''from rh_iac import Cluster, Folder, Stack

with Stack("mlstack", group="ml") as stack:
    Cluster("inherits", workers=1)
    Cluster("overrides", workers=1, autostop_mins=90)
    Folder("scratch")
    Folder("explicit", path="file:///tmp/elsewhere")
''')
    stack = Project(proj.root).load_stack("mlstack")
    assert stack.provider == "local" and stack.stage == "dev"
    assert stack["inherits"].autostop_mins == 15 and stack["overrides"].autostop_mins == 90
    assert stack["scratch"].path == "file:///tmp/rh-ml-storage/scratch"
    assert stack["explicit"].path == "file:///tmp/elsewhere"
    proj.write_stack("prod", 'from rh_iac import Cluster, Stack\nwith Stack("prod", group="platform"):\n'
                             '    Cluster("c", workers=1)\n')
    prod = Project(proj.root).load_stack("prod")
    assert prod.stage == "prod" and prod["c"].autostop_mins == 45
    proj.write_stack("bad", 'from rh_iac import Stack\nwith Stack("bad", group="nobody"):\n    pass\n')
    with pytest.raises(UnknownGroupError, match="group 'nobody' is not declared in .*_groups.py.*known: ml"):
        Project(proj.root).load_stack("bad")


def test_deploying_a_group_stack_needs_membership_and_fails_before_anything_is_deployed(proj, monkeypatch):
    from rh_iac import operations

    proj.write_stack("mlstack", 'from rh_iac import Folder, Stack\nwith Stack("mlstack", group="ml"):\n'
                                '    Folder("scratch", path="file:///tmp/rh-never-created")\n')
    monkeypatch.setenv("RH_IAC_USER_EMAIL", "bob@x.com")
    with pytest.raises(AccessDeniedError, match="bob@x.com may not deploy stack 'mlstack'.*group 'ml'.*alice@x.com"):
        operations.deploy("mlstack", Project(proj.root))
    assert not (proj.root / ".rh_iac/mlstack/terraform/terraform.tfstate").exists()
    assert not (proj.root / "rns/scratch.json").exists()
    proj.write_stack("plain", 'from rh_iac import Folder, Stack\nwith Stack("plain"):\n'
                              '    Folder("notes", path="file:///tmp/rh-never-created")\n')
    (proj.root / "stacks/_groups.py").write_text(GROUPS + 'Group("infra", members=["alice@x.com"], '
                                                          'access={"~": "write"})\n')  # deploys record in ~
    with pytest.raises(AccessDeniedError, match="bob@x.com may not write ~/notes.*alice@x.com \\(group infra\\)"):
        operations.deploy("plain", Project(proj.root))
    assert not (proj.root / ".rh_iac/plain/terraform/terraform.tfstate").exists()


def test_invoke_check_fails_on_commits_by_authors_without_write_access(proj):
    base = _git(proj.root, "rev-parse", "HEAD").strip()
    ml = proj.root / "rns/_folders/ml"
    ml.mkdir(parents=True)
    (ml / "flights.json").write_text(json.dumps({"name": "flights", "type": "table"}))
    _git(proj.root, "add", "rns")
    _git(proj.root, "commit", "-q", "-m", "alice adds flights", email="alice@x.com")
    good = proj.invoke("check", "--base", base)
    assert "access check passed" in good.stdout
    (ml / "flights.json").write_text(json.dumps({"name": "flights", "type": "table", "status": "x"}))
    (proj.root / "rns/_folders/bob").mkdir()
    (proj.root / "rns/_folders/bob/mine.json").write_text(json.dumps({"name": "mine", "type": "folder"}))
    _git(proj.root, "add", "rns")
    _git(proj.root, "commit", "-q", "-m", "bob edits", email="bob@x.com")
    # a PR cannot grant itself access: the groups file of the base is what counts
    (proj.root / "stacks/_groups.py").write_text(GROUPS + 'Group("bobs", members=["bob@x.com"], '
                                                          'access={"/ml": "write"})\n')
    _git(proj.root, "commit", "-q", "-am", "bob grants himself", email="bob@x.com")
    violations = check_changes(base, root=proj.root)
    assert [(v.author, v.rns_path, v.level) for v in violations] == [("bob@x.com", "/ml/flights", "read")]
    bad = proj.invoke("check", "--base", base, check=False)
    assert bad.returncode == 1
    assert "bob@x.com" in bad.stderr and "rns/_folders/ml/flights.json" in bad.stderr and "/ml/flights" in bad.stderr
    # a base CI cannot see (a shallow clone, an unfetched origin/main) fails the check instead of passing it
    with pytest.raises(GroupDeclarationError, match="revision 'origin/nosuch' is not a commit"):
        check_changes("origin/nosuch", root=proj.root)
    unknown = proj.invoke("check", "--base", "origin/nosuch", check=False)
    assert unknown.returncode == 1 and "git fetch" in unknown.stderr


def test_the_identity_checked_is_the_identity_that_commits(proj, monkeypatch):
    """A write allowed for $RH_IAC_USER_EMAIL is committed as that author, so `invoke check` judges the same person."""
    from rh_iac.project import Project

    base = _git(proj.root, "rev-parse", "HEAD").strip()
    monkeypatch.setenv("RH_IAC_USER_EMAIL", "alice@x.com")
    rns = Project(proj.root).rns()
    check_write("/ml/flights", root=proj.root)
    rns.write({"name": "flights", "type": "table", "spec": {"folder": "datasets"}}, folder="/ml")
    rns.commit("rns: alice adds flights")
    assert _git(proj.root, "log", "-1", "--format=%ae").strip() == "alice@x.com"
    assert check_changes(base, root=proj.root) == []


def test_share_writes_a_reviewable_grant_into_the_groups_file(proj):
    line = share("/ml/flights", "carol@x.com", "read", root=proj.root, user="alice@x.com")
    assert line.startswith("Grant('/ml/flights', 'carol@x.com', 'read')")
    text = (proj.root / "stacks/_groups.py").read_text()
    assert text.startswith(GROUPS.rstrip("\n")) and text.rstrip().endswith(line)  # appended, nothing rewritten
    groups = load_groups(proj.root)
    assert groups.level("carol@x.com", "/ml/flights") == "read" and groups.level("carol@x.com", "/ml/x") is None
    assert share("/ml/flights", "carol@x.com", "read", root=proj.root, user="alice@x.com") is None  # held already
    with pytest.raises(AccessDeniedError, match="bob@x.com may not write /ml"):
        share("/ml", "bob@x.com", "write", root=proj.root, user="bob@x.com")  # you cannot grant what you lack
    with pytest.raises(UnknownGroupError):
        share("/ml", "nobody", "read", root=proj.root, user="alice@x.com")
    out = proj.invoke("rns.share", "/ml", "readers", "--level", "write", RH_IAC_USER_EMAIL="alice@x.com").stdout
    assert "Grant('/ml', 'readers', 'write')" in out
    assert load_groups(proj.root).level("bob@x.com", "/ml/flights") == "write"
    assert not proj.git("status", "--porcelain", "rns")  # a share changes the groups file only, for review


def _clone(bare: Path, where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(bare), str(where)], check=True, capture_output=True)
    return where


def test_git_remote_push_never_forces_and_pull_merges_only_rns(tmp_path):
    seed = tmp_path / "seed"
    seed.mkdir()
    _git(seed, "init", "-q", "-b", "main")
    (seed / "rns").mkdir()
    (seed / "rns/a.json").write_text('{"name": "a", "type": "folder"}\n')
    (seed / "app.py").write_text("x = 1\n")
    _git(seed, "add", "-A")
    _git(seed, "commit", "-q", "-m", "init")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True, capture_output=True)
    alice, bob = _clone(bare, tmp_path / "alice"), _clone(bare, tmp_path / "bob")

    (alice / "rns/b.json").write_text('{"name": "b", "type": "folder"}\n')
    _git(alice, "add", "rns")
    _git(alice, "commit", "-q", "-m", "rns: add b", email="alice@x.com")
    assert "pushed main" in gitremote.push(alice, "origin")

    (bob / "rns/c.json").write_text('{"name": "c", "type": "folder"}\n')
    _git(bob, "add", "rns")
    _git(bob, "commit", "-q", "-m", "rns: add c", email="bob@x.com")
    remote_head = _git(bare, "rev-parse", "main").strip()
    with pytest.raises(GitRemoteConflictError, match="origin/main has commits this checkout lacks.*rns.pull"):
        gitremote.push(bob, "origin")
    assert _git(bare, "rev-parse", "main").strip() == remote_head  # nothing was forced
    assert "merged 1 RNS change" in gitremote.pull(bob, "origin")
    assert (bob / "rns/b.json").is_file() and (bob / "rns/c.json").is_file()
    gitremote.push(bob, "origin")
    assert _git(bare, "rev-parse", "main").strip() == _git(bob, "rev-parse", "HEAD").strip()

    (alice / "app.py").write_text("x = 2\n")  # a code change on the remote: an RNS pull must not bring it in
    _git(alice, "commit", "-q", "-am", "code")
    gitremote.pull(alice, "origin")
    gitremote.push(alice, "origin")
    before = _git(bob, "rev-parse", "HEAD").strip()
    with pytest.raises(GitRemoteConflictError, match=r"outside rns/ \(app.py\)"):
        gitremote.pull(bob, "origin")
    assert _git(bob, "rev-parse", "HEAD").strip() == before and (bob / "app.py").read_text() == "x = 1\n"
    assert "up to date" in gitremote.pull(alice, "origin")


def test_git_remote_pull_with_conflicting_record_edits_changes_nothing(tmp_path):
    seed = tmp_path / "seed"
    (seed / "rns").mkdir(parents=True)
    _git(seed, "init", "-q", "-b", "main")
    (seed / "rns/a.json").write_text('{"name": "a", "type": "folder", "spec": {"path": null}}\n')
    _git(seed, "add", "-A")
    _git(seed, "commit", "-q", "-m", "init")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True, capture_output=True)
    alice, bob = _clone(bare, tmp_path / "alice"), _clone(bare, tmp_path / "bob")
    for who, path in ((alice, "file:///a"), (bob, "file:///b")):
        (who / "rns/a.json").write_text(f'{{"name": "a", "type": "folder", "spec": {{"path": "{path}"}}}}\n')
        _git(who, "commit", "-q", "-am", f"rns: {who.name}")
    gitremote.push(alice, "origin")
    before = _git(bob, "rev-parse", "HEAD").strip()
    with pytest.raises(GitRemoteConflictError, match=r"conflicts in rns/ \(rns/a.json\); nothing was changed"):
        gitremote.pull(bob, "origin")
    assert _git(bob, "rev-parse", "HEAD").strip() == before
    assert not (bob / ".git/MERGE_HEAD").exists() and "file:///b" in (bob / "rns/a.json").read_text()
    assert not _git(bob, "status", "--porcelain")
