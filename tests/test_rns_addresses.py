"""RNS addresses: name, ~/name, @/name, /team/sub/name, relative paths; where they live; unknown and ambiguous names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rns_helpers import git, hermetic_git, init_repo

from rh_iac.errors import AmbiguousNameError, InvalidAddressError, ResourceNotFoundError
from rh_iac.rns import GitRNS, addresses, current_folder, current_user, resolve, set_folder


@pytest.fixture(autouse=True)
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return hermetic_git(tmp_path, monkeypatch, email="Jane.Doe+ci@example.com")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "project")


def rec(name: str, **spec: object) -> dict:
    return {"schema_version": 1, "name": name, "type": "folder", "spec": {"path": None, **spec}}


def test_address_forms_resolve_to_canonical_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RH_IAC_USER", "alice")
    assert resolve("dev-cluster") == ("~", "dev-cluster")
    assert resolve("~/dev-cluster") == ("~", "dev-cluster")
    assert resolve("~/sub/deeper/x") == ("~/sub/deeper", "x")
    assert resolve("@/scratch") == ("/alice", "scratch")
    assert resolve("@/notes/x") == ("/alice/notes", "x")
    assert resolve("/team/x") == ("/team", "x")
    assert resolve("/team/sub/x") == ("/team/sub", "x")
    assert resolve("sub/x") == ("~/sub", "x")  # relative to the current folder
    assert resolve("x", folder="/team") == ("/team", "x")
    assert resolve("sub/x", folder="/team") == ("/team/sub", "x")
    assert addresses.address("/team/sub", "x") == "/team/sub/x" and addresses.address("~", "x") == "~/x"


@pytest.mark.parametrize("bad", ["", "/x", "x/", "/team//x", "~/../x", "Team/x", "/team/-x", "a b", "~", ".."])
def test_malformed_addresses_are_named_errors(bad: str) -> None:
    with pytest.raises(InvalidAddressError) as info:
        resolve(bad)
    assert repr(bad) in str(info.value) or "segment" in str(info.value) or "name" in str(info.value)


def test_current_folder_from_set_folder_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert current_folder() == "~"
    monkeypatch.setenv("RH_IAC_RNS_FOLDER", "/team/ml")
    assert current_folder() == "/team/ml" and resolve("x") == ("/team/ml", "x")
    assert set_folder("~/work") == "~/work"  # set_folder wins over the variable
    assert resolve("x") == ("~/work", "x")
    monkeypatch.setenv("RH_IAC_USER", "bob")
    set_folder("@")
    assert current_folder() == "/bob"
    monkeypatch.setenv("RH_IAC_USER", "carol")  # '@' follows the user
    assert current_folder() == "/carol"
    assert set_folder(None) == "/team/ml"
    monkeypatch.setenv("RH_IAC_RNS_FOLDER", "nonsense")
    with pytest.raises(InvalidAddressError, match="RH_IAC_RNS_FOLDER"):
        current_folder()
    with pytest.raises(InvalidAddressError):
        set_folder("/Bad Folder")


def test_user_comes_from_git_email_sanitized(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    assert current_user() == "jane.doe-ci"  # local part of git's user.email, lowercased, '+' turned into '-'
    monkeypatch.setenv("RH_IAC_USER", "Root User")
    assert current_user() == "root-user"
    monkeypatch.setenv("RH_IAC_USER", "!!!")
    with pytest.raises(InvalidAddressError, match="RH_IAC_USER"):
        current_user()


def test_layout_on_disk_cannot_collide(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RH_IAC_USER", "alice")
    rns = GitRNS(repo)
    rns.write(rec("x"))
    rns.write(rec("x", tag="sub"), folder="~/team")
    rns.write(rec("x", tag="group"), folder="/team")
    rns.write(rec("x", tag="nested"), folder="/team/sub")
    rns.write(rec("x", tag="mine"), folder="@")
    base = repo / "rns"
    assert {p.relative_to(base).as_posix() for p in base.rglob("*.json")} == {
        "x.json", "team/x.json", "_folders/team/x.json", "_folders/team/sub/x.json", "_folders/alice/x.json"}
    assert rns.read("~/x")["spec"] == {"path": None}
    assert rns.read("~/team/x")["spec"]["tag"] == "sub"
    assert rns.read("/team/x")["spec"]["tag"] == "group"
    assert rns.read("/team/sub/x")["spec"]["tag"] == "nested"
    assert rns.read("@/x")["spec"]["tag"] == "mine" and rns.read("/alice/x")["spec"]["tag"] == "mine"
    assert rns.list() == ["x"]  # the current folder, ~: _folders is not a record
    assert rns.list("~", recursive=True) == ["team/x", "x"]
    assert rns.list("/team", recursive=True) == ["sub/x", "x"]
    assert rns.addresses() == ["~/team/x", "~/x", "/alice/x", "/team/sub/x", "/team/x"]
    assert rns.read("sub/x", folder="/team")["spec"]["tag"] == "nested"


def test_nested_folder_commit_contains_only_rns_paths(repo: Path) -> None:
    (repo / "README.md").write_text("user edit, not for RNS\n")
    rns = GitRNS(repo)
    rns.write(rec("x"), folder="/team/sub")
    rns.write(rec("y"), folder="~/deep/er")
    sha = rns.commit("nested")
    assert set(git(repo, "show", "--name-only", "--format=", sha).splitlines()) == {
        "rns/_folders/team/sub/x.json", "rns/deep/er/y.json"}
    assert git(repo, "status", "--porcelain") == "M README.md"
    assert [v.message for v in rns.history("/team/sub/x")] == ["nested"]


def test_bare_name_falls_back_to_the_one_folder_holding_it(repo: Path) -> None:
    rns = GitRNS(repo)
    rns.write(rec("only-there", tag="t"), folder="/team")
    assert rns.read("only-there")["spec"]["tag"] == "t"
    assert rns.locate("only-there")[:2] == ("/team", "only-there")
    with pytest.raises(ResourceNotFoundError):
        rns.read("~/only-there")  # an explicit folder never falls back


def test_ambiguous_bare_name_lists_candidates(repo: Path) -> None:
    rns = GitRNS(repo)
    rns.write(rec("shared"), folder="/team-a")
    rns.write(rec("shared"), folder="/team-b/sub")
    with pytest.raises(AmbiguousNameError) as info:
        rns.read("shared")
    assert "/team-a/shared" in str(info.value) and "/team-b/sub/shared" in str(info.value)
    assert isinstance(info.value, LookupError)
    rns.write(rec("shared"))  # in the current folder it is not ambiguous
    assert rns.locate("shared")[0] == "~"


def test_unknown_name_names_address_folders_and_close_matches(repo: Path) -> None:
    rns = GitRNS(repo)
    rns.write(rec("dev-cluster"))
    rns.write(rec("prod-cluster"), folder="/team")
    with pytest.raises(ResourceNotFoundError) as info:
        rns.read("dev-clustr")
    msg = str(info.value)
    assert "'dev-clustr'" in msg and "searched ~ and every other folder" in msg
    assert "close matches: ~/dev-cluster" in msg
    with pytest.raises(ResourceNotFoundError, match=r"searched /team in .*close matches: .*/team/prod-cluster"):
        rns.read("/team/prod-clster")


def test_happy_path_load_is_a_path_lookup_not_a_scan(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rns = GitRNS(repo)
    for i in range(50):
        rns.write(rec(f"r{i}"))
    rns.write(rec("t"), folder="/team/sub")

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("a directory scan on the happy path")

    monkeypatch.setattr(Path, "rglob", no_scan)
    monkeypatch.setattr(Path, "glob", no_scan)
    monkeypatch.setattr(Path, "iterdir", no_scan)
    monkeypatch.setattr(os, "walk", no_scan)
    monkeypatch.setattr(os, "scandir", no_scan)
    assert rns.read("r7")["name"] == "r7"
    assert rns.read("/team/sub/t")["name"] == "t"
    set_folder("/team/sub")
    assert rns.read("t")["name"] == "t"
