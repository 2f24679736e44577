"""The git-backed RNS store: records on disk, and commits that contain only RNS paths."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from pathlib import Path

import pytest

from rh_iac.errors import RecordCorruptError, ResourceNotFoundError, RNSError
from rh_iac.rns import GitRNS


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def changed_paths(repo: Path, rev: str = "HEAD") -> set[str]:
    return set(git(repo, "show", "--name-only", "--format=", rev).splitlines())


def commit_count(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


@pytest.fixture(autouse=True)
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hermetic git: a global config in tmp_path with a test identity, no system config, no real HOME."""
    cfg = tmp_path / "gitconfig"
    cfg.write_text("[user]\n\tname = Test User\n\temail = test@example.com\n\tuseConfigOnly = true\n")
    monkeypatch.setenv("HOME", str(tmp_path / "fake-home"))
    monkeypatch.setenv("RH_IAC_HOME", str(tmp_path / "rh_iac_home"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL",
                "GIT_INDEX_FILE", "GIT_DIR", "GIT_WORK_TREE"):
        monkeypatch.delenv(var, raising=False)
    return cfg


@pytest.fixture
def empty_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    return repo


@pytest.fixture
def repo(empty_repo: Path) -> Path:
    (empty_repo / "README.md").write_text("readme v1\n")
    (empty_repo / "stacks").mkdir()
    (empty_repo / "stacks" / "local.py").write_text("# stack v1\n")
    git(empty_repo, "add", "-A")
    git(empty_repo, "commit", "-q", "-m", "initial")
    return empty_repo


def rec(name: str, **extra: object) -> dict:
    return {"name": name, "type": "cluster", **extra}


# --- records -----------------------------------------------------------------------------------------------------
def test_write_read_round_trip_and_file_format(repo: Path) -> None:
    rns = GitRNS(repo)
    record = rec("dask", workers=2, meta={"b": 1, "a": [1, 2]})
    assert rns.write(record) is True
    assert rns.read("dask") == record
    text = (repo / "rns" / "dask.json").read_text()
    assert text == json.dumps(record, indent=2, sort_keys=True) + "\n"
    assert rns.write(dict(record)) is False  # unchanged content
    assert rns.write(rec("dask", workers=3)) is True
    assert rns.read("dask")["workers"] == 3
    assert rns.list() == ["dask"]


def test_list_is_sorted_and_ignores_temp_files(repo: Path) -> None:
    rns = GitRNS(repo)
    for name in ("zeta", "alpha", "mid"):
        rns.write(rec(name))
    (repo / "rns" / ".alpha.json.x1.tmp").write_text("{}")
    assert rns.list() == ["alpha", "mid", "zeta"]
    assert GitRNS(repo, folder="nothing-here").list() == []


def test_remove(repo: Path) -> None:
    rns = GitRNS(repo)
    rns.write(rec("a"))
    assert rns.remove("a") is True
    assert rns.remove("a") is False
    assert rns.list() == []


def test_write_validates_record(repo: Path) -> None:
    rns = GitRNS(repo)
    with pytest.raises(RNSError, match="'type'"):
        rns.write({"name": "a"})
    with pytest.raises(RNSError, match="'name'"):
        rns.write({"type": "cluster"})
    with pytest.raises(RNSError, match="invalid"):
        rns.write(rec("../escape"))
    with pytest.raises(RNSError, match="JSON-serializable"):
        rns.write(rec("a", bad=object()))
    assert not (repo / "rns" / "a.json").exists()


def test_unknown_name_lists_known_names(repo: Path) -> None:
    rns = GitRNS(repo)
    rns.write(rec("cluster-a"))
    rns.write(rec("bucket-b"))
    with pytest.raises(ResourceNotFoundError) as info:
        rns.read("missing")
    msg = str(info.value)
    assert "no RNS record for 'missing'" in msg and str(repo / "rns") in msg
    assert "known: ~/bucket-b, ~/cluster-a" in msg
    assert isinstance(info.value, LookupError)


def test_corrupt_json_names_the_file(repo: Path) -> None:
    rns = GitRNS(repo)
    rns.write(rec("a"))
    path = repo / "rns" / "a.json"
    path.write_text('{"name": "a", "type": ')
    with pytest.raises(RecordCorruptError, match="not valid JSON") as info:
        rns.read("a")
    assert str(path) in str(info.value)


def test_record_missing_field_names_file_and_field(repo: Path) -> None:
    rns = GitRNS(repo)
    (repo / "rns").mkdir()
    path = repo / "rns" / "b.json"
    path.write_text('{"name": "b"}\n')
    with pytest.raises(RecordCorruptError, match="'type'") as info:
        rns.read("b")
    assert str(path) in str(info.value)
    path.write_text("[1, 2]\n")
    with pytest.raises(RecordCorruptError, match="JSON object"):
        rns.read("b")
    path.write_text('{"name": "c", "type": "x"}\n')
    with pytest.raises(RecordCorruptError, match="holds name 'c'"):
        rns.read("b")


# --- commits -----------------------------------------------------------------------------------------------------
def test_commit_contains_only_rns_paths_and_leaves_user_changes(repo: Path) -> None:
    (repo / "README.md").write_text("readme v2 staged\n")
    git(repo, "add", "README.md")
    (repo / "stacks" / "local.py").write_text("# stack v2 unstaged\n")
    (repo / "notes.txt").write_text("untracked\n")
    (repo / "rns").mkdir()
    (repo / "rns" / ".a.json.stale.tmp").write_text("{}")  # a crashed write's leftover is never committed
    rns = GitRNS(repo)
    rns.write(rec("a"))
    rns.write(rec("b"))
    before = git(repo, "rev-parse", "HEAD")

    sha = rns.commit("rns: add a and b")

    assert sha == git(repo, "rev-parse", "HEAD")
    assert git(repo, "rev-parse", "HEAD~1") == before
    assert changed_paths(repo) == {"rns/a.json", "rns/b.json"}
    assert git(repo, "log", "-1", "--format=%s") == "rns: add a and b"
    assert git(repo, "log", "-1", "--format=%an <%ae>") == "Test User <test@example.com>"
    # the staged change stays staged and uncommitted
    assert git(repo, "diff", "--cached", "--name-only") == "README.md"
    assert git(repo, "show", "HEAD:README.md") == "readme v1"
    assert (repo / "README.md").read_text() == "readme v2 staged\n"
    # the unstaged change is untouched and still unstaged
    assert git(repo, "diff", "--name-only") == "stacks/local.py"
    assert (repo / "stacks" / "local.py").read_text() == "# stack v2 unstaged\n"
    # RNS paths are clean in index and working tree; the untracked file stays untracked
    status = git(repo, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert sorted(status) == sorted(["M  README.md", " M stacks/local.py", "?? notes.txt", "?? rns/.a.json.stale.tmp"])


def test_no_change_commit_returns_none(repo: Path) -> None:
    rns = GitRNS(repo)
    assert rns.commit("nothing yet") is None  # no rns dir at all
    assert commit_count(repo) == 1
    rns.write(rec("a"))
    assert rns.commit("add a") is not None
    head = git(repo, "rev-parse", "HEAD")
    (repo / "README.md").write_text("other change\n")  # changes outside rns/ do not count
    assert rns.commit("again") is None
    assert git(repo, "rev-parse", "HEAD") == head
    assert commit_count(repo) == 2


def test_first_commit_in_empty_repo(empty_repo: Path) -> None:
    (empty_repo / "staged.txt").write_text("staged but not committed\n")
    git(empty_repo, "add", "staged.txt")
    rns = GitRNS(empty_repo)
    assert rns.commit("nothing") is None
    assert subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=empty_repo).returncode != 0
    rns.write(rec("first"))
    sha = rns.commit("first record")
    assert sha == git(empty_repo, "rev-parse", "HEAD")
    assert commit_count(empty_repo) == 1
    assert git(empty_repo, "ls-tree", "-r", "--name-only", "HEAD") == "rns/first.json"
    assert git(empty_repo, "diff", "--cached", "--name-only") == "staged.txt"
    assert git(empty_repo, "symbolic-ref", "HEAD") == "refs/heads/main"


def test_rns_in_a_subdirectory_of_the_repo(repo: Path) -> None:
    infra = repo / "infra"
    infra.mkdir()
    (repo / "README.md").write_text("staged\n")
    git(repo, "add", "README.md")
    rns = GitRNS(infra)
    rns.write(rec("a"))
    rns.commit("sub")
    assert changed_paths(repo) == {"infra/rns/a.json"}
    assert git(repo, "diff", "--cached", "--name-only") == "README.md"
    assert [h.message for h in rns.history("a")] == ["sub"]


def test_deleted_and_modified_records_are_committed(repo: Path) -> None:
    rns = GitRNS(repo)
    rns.write(rec("a"))
    rns.write(rec("b"))
    rns.commit("add")
    rns.remove("a")
    rns.write(rec("b", workers=4))
    rns.commit("remove a, change b")
    status = git(repo, "show", "--name-status", "--format=", "HEAD").splitlines()
    assert sorted(status) == ["D\trns/a.json", "M\trns/b.json"]
    assert git(repo, "ls-files", "rns") == "rns/b.json"  # the real index no longer has a
    assert git(repo, "status", "--porcelain") == ""
    rns.remove("b")
    rns.commit("remove all")  # the rns dir may now be empty or gone
    (repo / "rns").rmdir()
    assert git(repo, "ls-tree", "-r", "--name-only", "HEAD") == "README.md\nstacks/local.py"
    assert rns.commit("nothing") is None


def test_commit_without_git_identity_uses_fallback(repo: Path, git_env: Path) -> None:
    git_env.write_text("[user]\n\tuseConfigOnly = true\n")
    rns = GitRNS(repo)
    rns.write(rec("a"))
    rns.commit("anonymous")
    fallback = "rh_iac <rh_iac@localhost>"
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>") == f"{fallback}|{fallback}"
    assert subprocess.run(["git", "config", "--get", "user.name"], cwd=repo).returncode == 1  # config unchanged


def test_history_newest_first(repo: Path) -> None:
    rns = GitRNS(repo)
    rns.write(rec("a", v=1))
    first = rns.commit("a v1")
    rns.write(rec("b"))
    rns.commit("b only")
    rns.write(rec("a", v=2))
    second = rns.commit("a v2")
    hist = rns.history("a")
    assert [h.commit for h in hist] == [second, first]
    assert [h.message for h in hist] == ["a v2", "a v1"]
    assert hist[0].author == "Test User <test@example.com>"
    assert "T" in hist[0].time
    assert hist[0].changes == ("v 1 -> 2",) and hist[1].changes == ("created",)
    assert rns.history("never") == []


def test_commit_outside_git_is_a_named_error(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(RNSError, match="not inside a git working tree"):
        GitRNS(plain).commit("x")
    with pytest.raises(RNSError, match="non-empty message"):
        GitRNS(plain).commit("  ")


def _commit_worker(root: str, tag: str, n: int, out: "multiprocessing.Queue[list[str | None] | str]") -> None:
    try:
        rns = GitRNS(Path(root))
        shas = []
        for i in range(n):
            rns.write(rec(f"{tag}-{i}"))
            shas.append(rns.commit(f"{tag} {i}"))
        out.put(shas)
    except Exception as exc:  # report, so the test fails at once instead of waiting on the queue
        out.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_commits_from_two_processes_all_land(repo: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    n = 6
    procs = [ctx.Process(target=_commit_worker, args=(str(repo), tag, n, out)) for tag in ("p", "q")]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [r for r in results if isinstance(r, str)]
    assert not errors
    assert all(p.exitcode == 0 for p in procs)
    shas = [s for r in results for s in r if s is not None]
    names = set(git(repo, "ls-tree", "--name-only", "HEAD", "rns/").splitlines())
    assert names == {f"rns/{t}-{i}.json" for t in ("p", "q") for i in range(n)}
    history = set(git(repo, "rev-list", "HEAD").splitlines())
    assert set(shas) <= history  # no commit was lost to a race on HEAD
    assert commit_count(repo) == 1 + len(shas)
    assert git(repo, "status", "--porcelain") == ""
    subprocess.run(["git", "fsck", "--no-progress"], cwd=repo, check=True, capture_output=True)


def test_nested_folder_and_rollback_commits_contain_only_rns_paths(repo: Path) -> None:
    (repo / "README.md").write_text("staged, not for RNS\n")
    git(repo, "add", "README.md")
    (repo / "stacks" / "local.py").write_text("# unstaged edit\n")
    rns = GitRNS(repo)
    rns.write(rec("a", workers=1), folder="/team/sub")
    rns.write(rec("b"), folder="~/nested")
    first = rns.commit("nested")
    assert changed_paths(repo) == {"rns/_folders/team/sub/a.json", "rns/nested/b.json"}
    rns.write({**rec("a", workers=2), "stack": "local", "spec": {"workers": 2}}, folder="/team/sub")
    rns.commit("a v2")
    restored = rns.rollback("/team/sub/a", first[:8])
    assert restored["workers"] == 1 and restored["pinned"]["version"] == first
    assert changed_paths(repo) == {"rns/_folders/team/sub/a.json"}
    assert git(repo, "log", "-1", "--format=%s") == f"rns: rollback a to {first[:12]}"
    assert git(repo, "diff", "--cached", "--name-only") == "README.md"
    assert git(repo, "diff", "--name-only") == "stacks/local.py"


def test_a_commit_narrowed_to_records_leaves_other_edits_uncommitted(repo: Path) -> None:
    """A run or a rollback commits its own record only, never someone's hand edit of another record."""
    rns = GitRNS(repo)
    rns.write(rec("a", v=1))
    rns.write(rec("b", v=1))
    rns.commit("both")
    rns.write(rec("a", v=2))
    rns.write(rec("b", v=2))  # an unrelated, uncommitted edit
    sha = rns.commit("only a", only=["a"])
    changed = subprocess.run(["git", "show", "--name-only", "--format=", sha], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.split()
    assert changed == ["rns/a.json"]
    assert rns.read("b")["v"] == 2  # still there, still uncommitted
    assert subprocess.run(["git", "status", "--porcelain", "rns"], cwd=repo, capture_output=True,
                          text=True).stdout.split() == ["M", "rns/b.json"]
    assert rns.commit("nothing of a", only=["a"]) is None and rns.commit("no such", only=["zzz"]) is None
