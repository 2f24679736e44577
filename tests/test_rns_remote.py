"""The remote RNS store: check-and-set versions on file:// and on S3 (moto's server), concurrent writers, sync."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from conftest import CANARY, _git
from rh_iac.errors import AccessDeniedError, RecordConflictError, RemoteStoreError, ResourceNotFoundError, RNSError
from rh_iac.rns.groups import Group, Groups
from rh_iac.rns.remote import RemoteRNS, pull_all, push_all, sync
from rh_iac.rns.store import GitRNS

try:
    from moto_server import moto_s3, s3_env  # noqa: F401 - fixtures
except ImportError:  # pragma: no cover
    from tests.moto_server import moto_s3, s3_env  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(300)

WRITERS = 6


def _record(name: str, **spec) -> dict:
    return {"schema_version": 1, "name": name, "type": "folder", "provider": "local", "stack": "s",
            "spec": {"path": None, **spec}, "outputs": {}, "status": "deployed"}


def _s3_store(endpoint: str, bucket: str) -> RemoteRNS:
    # a filesystem instance per writer (no shared client), so their requests really run concurrently
    return RemoteRNS(f"s3://{bucket}/rns", {"client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": True})


@pytest.fixture(params=["file", "s3"])
def make_store(request, tmp_path):
    """A factory of independent RemoteRNS clients of one store: a folder, or a fresh bucket on moto's server."""
    if request.param == "file":
        url = (tmp_path / "remote").as_uri()
        yield lambda: RemoteRNS(url)
    else:
        endpoint = request.getfixturevalue("s3_env")
        import s3fs

        bucket = f"rns-{uuid.uuid4().hex[:12]}"
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True).mkdir(bucket)
        yield lambda: _s3_store(endpoint, bucket)


def _race(stores: list[RemoteRNS], address: str, expected: int) -> tuple[list[int], list[RecordConflictError]]:
    """Every store pushes its own record of ``address`` based on ``expected``, all released by one barrier."""
    barrier = threading.Barrier(len(stores))
    won, lost, errors = [], [], []
    lock = threading.Lock()

    def write(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            stores[i].push(_record("shared", path=f"writer-{i}"), expected, address=address)
            with lock:
                won.append(i)
        except RecordConflictError as exc:
            with lock:
                lost.append(exc)
        except BaseException as exc:  # surfaced below: a thread's exception must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return won, lost


def test_concurrent_writers_one_wins_the_others_conflict_and_nothing_is_lost(make_store):
    address = "/team/shared"
    first = make_store()
    assert first.push(_record("shared", path="base"), 0, address=address) == 1
    for trial in range(3):  # the race, more than once
        base = first.version(address)
        stores = [make_store() for _ in range(WRITERS)]
        won, lost = _race(stores, address, base)
        assert len(won) == 1, f"trial {trial}: winners {won}"
        assert len(lost) == WRITERS - 1
        winner = won[0]
        assert first.pull(address).record["spec"]["path"] == f"writer-{winner}"
        assert first.version(address) == base + 1
        for exc in lost:
            assert exc.address == address and exc.expected_version == base and exc.current_version == base + 1
            assert address in str(exc) and f"version {base + 1}" in str(exc) and f"version {base}" in str(exc)
            assert "pull" in str(exc) and "push again" in str(exc)
            assert exc.rejected["spec"]["path"].startswith("writer-")
        # each loser pulls, merges (here: takes its own change) and retries until it lands
        for exc in lost:
            while True:
                current = first.version(address)
                try:
                    first.push(exc.rejected, current, address=address)
                    break
                except RecordConflictError:
                    continue
        history = [r.record["spec"]["path"] for r in first.history(address)[base:]]
        assert sorted(history) == sorted(f"writer-{i}" for i in range(WRITERS))  # every writer's version is kept
    assert first.pull(address, 1).record["spec"]["path"] == "base"


def test_a_stale_write_is_refused_without_writing(make_store):
    store = make_store()
    store.push(_record("x", path="a"), 0, address="/team/x")
    store.push(_record("x", path="b"), 1, address="/team/x")
    with pytest.raises(RecordConflictError, match=r"/team/x.*version 2.*based on version 1") as info:
        store.push(_record("x", path="c"), 1, address="/team/x")
    assert info.value.current_version == 2 and store.version("/team/x") == 2
    with pytest.raises(RecordConflictError):  # a "new" record that already exists is a conflict too
        store.push(_record("x", path="d"), 0, address="/team/x")
    assert [r.record["spec"]["path"] for r in store.history("/team/x")] == ["a", "b"]
    with pytest.raises(RNSError, match="expected_version"):
        store.push(_record("x"), -1, address="/team/x")


def test_latest_is_a_hint_rolled_forward(tmp_path, monkeypatch):
    store = RemoteRNS((tmp_path / "r").as_uri())
    for i in range(3):
        store.push(_record("y", path=str(i)), i, address="/team/y")

    def no_listing(*args, **kwargs):
        raise AssertionError("reading the latest version must not list the store")

    with monkeypatch.context() as m:
        for name in ("ls", "find", "glob", "walk"):
            m.setattr(store.fs, name, no_listing)
        assert store.pull("/team/y").version == 3
    latest = tmp_path / "r/team/y/latest"
    assert json.loads(latest.read_text()) == {"version": 3}
    latest.write_text(json.dumps({"version": 1}))  # a pointer write that landed late
    assert store.version("/team/y") == 3 and store.pull("/team/y").record["spec"]["path"] == "2"
    latest.write_text("")  # a torn hint
    assert store.version("/team/y") == 3
    latest.unlink()  # a writer that died before updating it
    assert store.version("/team/y") == 3
    with pytest.raises(RecordConflictError):
        store.push(_record("y"), 1, address="/team/y")
    assert store.push(_record("y", path="3"), 3, address="/team/y") == 4


def test_pull_list_and_bad_input(tmp_path):
    store = RemoteRNS((tmp_path / "r").as_uri())
    store.push(_record("a"), 0, address="/team/a")
    store.push(_record("b"), 0, address="/team/sub/b")
    store.push(_record("c"), 0)  # a bare name: the current folder, ~
    assert store.list() == ["/team/a", "/team/sub/b", "~/c"]
    assert store.list("/team/sub") == ["/team/sub/b"]
    with pytest.raises(ResourceNotFoundError, match="/team/nope"):
        store.pull("/team/nope")
    with pytest.raises(ResourceNotFoundError, match="version 7"):
        store.pull("/team/a", 7)
    with pytest.raises(RNSError, match="'name' and 'type'"):
        store.push({"name": "z"}, 0)
    secret = {"name": "tok", "type": "secret", "spec": {"value": CANARY}}
    with pytest.raises(RNSError, match="secret"):
        store.push(secret, 0, address="/team/tok")
    assert not any(CANARY.encode() in p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file())
    with pytest.raises(RemoteStoreError, match="atomic create"):
        RemoteRNS("dir::memory://somewhere")


def test_a_push_to_a_folder_without_write_access_is_refused(tmp_path):
    groups = Groups({"ml": Group("ml", members=["alice@x.com"], access={"/ml": "write", "/shared": "read"})})
    alice = RemoteRNS((tmp_path / "r").as_uri(), groups=groups, user="alice@x.com")
    bob = RemoteRNS((tmp_path / "r").as_uri(), groups=groups, user="bob@x.com")
    assert alice.push(_record("m"), 0, address="/ml/m") == 1
    with pytest.raises(AccessDeniedError, match=r"bob@x\.com may not write /ml/m.*'write'.*alice@x\.com \(group ml\)"):
        bob.push(_record("m", path="mine"), 1, address="/ml/m")
    with pytest.raises(AccessDeniedError, match="alice@x.com may not write /shared/s.*has read"):
        alice.push(_record("s"), 0, address="/shared/s")
    assert alice.version("/ml/m") == 1 and alice.list() == ["/ml/m"]
    assert bob.push(_record("mine"), 0, address="/bob/mine") == 1  # one's own folder, @
    assert bob.push(_record("open"), 0, address="/elsewhere/open") == 1  # no group governs it


def _repo(path: Path) -> GitRNS:
    path.mkdir()
    _git(path, "init", "-q")
    (path / "README").write_text("x")
    _git(path, "add", "README")
    _git(path, "commit", "-q", "-m", "init")
    return GitRNS(path)


def test_sync_pushes_local_records_and_pulls_them_into_another_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_AUTHOR_NAME", "t")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "t@t")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "t")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "t@t")
    remote = RemoteRNS((tmp_path / "remote").as_uri())
    mine, theirs = _repo(tmp_path / "mine"), _repo(tmp_path / "theirs")
    mine.write(_record("flights", path="a"))
    mine.write(_record("datasets"))
    mine.commit("rns: local")
    assert push_all(mine, remote, tmp_path / "mine/.rh_iac") == {"~/datasets": 1, "~/flights": 1}
    assert push_all(mine, remote, tmp_path / "mine/.rh_iac") == {}  # nothing changed: nothing pushed

    (tmp_path / "theirs/notes.txt").write_text("a user's unrelated change")
    commit = pull_all(theirs, remote, tmp_path / "theirs/.rh_iac", folder="/team", remote_folder="~")
    assert commit is not None
    assert theirs.read("/team/flights")["spec"]["path"] == "a"
    changed = subprocess.run(["git", "show", "--name-only", "--format=", commit], cwd=tmp_path / "theirs",
                             capture_output=True, text=True, check=True).stdout.split()
    assert changed and all(p.startswith("rns/") for p in changed)

    # they change it and push; my next push of an edit based on version 1 is a conflict, not an overwrite
    theirs.write(_record("flights", path="theirs"), folder="/team")
    remote.push(theirs.read("/team/flights"), 1, address="~/flights")
    mine.write(_record("flights", path="mine"))
    with pytest.raises(RecordConflictError, match="~/flights"):
        push_all(mine, remote, tmp_path / "mine/.rh_iac")
    assert remote.pull("~/flights").record["spec"]["path"] == "theirs"
    with pytest.raises(RecordConflictError, match="changed since it was synced"):  # both sides edited it
        pull_all(mine, remote, tmp_path / "mine/.rh_iac")
    mine.write(_record("flights", path="a"))  # drop the local edit: the pull takes theirs
    pull_all(mine, remote, tmp_path / "mine/.rh_iac")
    assert mine.read("flights")["spec"]["path"] == "theirs"
    mine.write(_record("datasets", path="changed"))  # sync: pull (nothing new), then push our change
    assert sync(mine, remote, tmp_path / "mine/.rh_iac") == (None, {"~/datasets": 2})
    assert remote.pull("~/datasets").record["spec"]["path"] == "changed"


def test_invoke_rns_push_and_pull_through_a_remote_store(tmp_path):
    from conftest import make_project

    url = (tmp_path / "shared").as_uri()
    a, b = make_project(tmp_path / "a"), make_project(tmp_path / "b")
    GitRNS(a.root).write(_record("lake", path="s3://bucket/lake"))
    a.git("add", "rns")
    a.git("commit", "-q", "-m", "rns: lake")
    assert "pushed ~/lake as version 1" in a.invoke("rns.push", url).stdout
    assert "nothing to push" in a.invoke("rns.push", url).stdout
    out = b.invoke("rns.pull", url, "--folder", "/team", "--remote-folder", "~").stdout
    assert "pulled into /team" in out
    assert GitRNS(b.root).read("/team/lake")["spec"]["path"] == "s3://bucket/lake"
    assert b.git("log", "-1", "--format=%s").startswith("rns: pull 1 record")
    # a stale push through the task is the conflict error, with its fix, and exit code 1
    RemoteRNS(url).push(_record("lake", path="s3://bucket/other"), 1, address="~/lake")
    GitRNS(a.root).write(_record("lake", path="s3://bucket/mine"))
    failed = a.invoke("rns.push", url, check=False)
    assert failed.returncode == 1 and "RecordConflictError" in failed.stderr and "~/lake" in failed.stderr
    assert RemoteRNS(url).pull("~/lake").record["spec"]["path"] == "s3://bucket/other"
