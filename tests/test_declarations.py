"""Invalid declarations fail at declaration time, with a specific exception that names the resource and the fix."""

from __future__ import annotations

import pytest

import rh_iac
from rh_iac import Cluster, Env, Folder, Secret, Stack, Table
from rh_iac.errors import (
    DeclarationError,
    DuplicateResourceError,
    InvalidNameError,
    InvalidSpecError,
    MissingDependencyError,
    StackFileError,
    UnknownProviderError,
)


def test_a_valid_stack_collects_its_resources_in_order():
    with Stack("demo") as stack:
        Cluster("c1", workers=3)
        folder = Folder("data")
        Table("t", folder=folder)
    assert [r.name for r in stack] == ["c1", "data", "t"]
    assert stack["c1"].provider == "local" and stack["c1"].spec()["workers"] == 3


def test_duplicate_names_in_one_stack():
    with pytest.raises(DuplicateResourceError, match="'dup'.*rename one"):
        with Stack("s"):
            Cluster("dup")
            Folder("dup")


@pytest.mark.parametrize("provider", ["azure", "", None, "LOCAL"])
def test_unknown_provider(provider):
    with pytest.raises(UnknownProviderError, match="Cluster 'c'.*local, aws, gcp"):
        with Stack("s"):
            Cluster("c", provider=provider if provider is not None else 3)


def test_unknown_stack_provider():
    with pytest.raises(UnknownProviderError, match="Stack 's'"):
        Stack("s", provider="azure")


@pytest.mark.parametrize("workers", [-1, 1.5, "2", True])
def test_worker_count_must_be_a_non_negative_integer(workers):
    with pytest.raises(InvalidSpecError, match="Cluster 'c': workers"):
        Cluster("c", workers=workers)


@pytest.mark.parametrize("name", ["Dev", "dev_cluster", "dev cluster", "-dev", "dev-", "a--b", "", "x" * 64, "dév", 7])
def test_illegal_name_characters(name):
    with pytest.raises(InvalidNameError, match="lowercase letters"):
        Cluster(name)


def test_table_whose_folder_is_not_declared_in_the_stack():
    outside = Folder("elsewhere")
    with pytest.raises(MissingDependencyError, match="Table 't' refers to Folder 'elsewhere'.*declare it"):
        with Stack("s"):
            Table("t", folder=outside)


def test_table_without_a_folder():
    with pytest.raises(MissingDependencyError, match="Table 't'"):
        Table("t", folder="datasets")


@pytest.mark.parametrize("kwargs, match", [
    ({"autostop_mins": 0}, "autostop_mins"),
    ({"threads_per_worker": 0}, "threads_per_worker"),
    ({"memory_limit": ""}, "memory_limit"),
    ({"env": "py311"}, "env must be an Env"),
])
def test_other_cluster_fields(kwargs, match):
    with pytest.raises(InvalidSpecError, match=match):
        Cluster("c", **kwargs)


def test_env_and_secret_validation():
    with pytest.raises(InvalidSpecError, match="Env 'e'"):
        Env("e", env_vars={"1BAD": "x"})
    with pytest.raises(InvalidSpecError, match="Secret 's'.*from_env"):
        Secret("s")
    with pytest.raises(InvalidSpecError, match="Secret 's'"):
        Secret("s", from_env="NOT-A-VAR")


def test_every_declaration_error_is_a_value_error():
    assert issubclass(DeclarationError, ValueError)


BAD_STACKS = {
    "duplicate": ("with Stack('bad', provider='local'):\n    Cluster('x')\n    Folder('x')\n", DuplicateResourceError),
    "provider": ("with Stack('bad', provider='local'):\n    Cluster('x', provider='azure')\n", UnknownProviderError),
    "workers": ("with Stack('bad', provider='local'):\n    Cluster('x', workers=-2)\n", InvalidSpecError),
    "name": ("with Stack('bad', provider='local'):\n    Cluster('X_1')\n", InvalidNameError),
    "table": ("f = Folder('f')\nwith Stack('bad', provider='local'):\n    Table('t', folder=f)\n",
              MissingDependencyError),
}


@pytest.mark.parametrize("case", sorted(BAD_STACKS))
def test_an_invalid_stack_file_deploys_nothing(project, case):
    body, error = BAD_STACKS[case]
    project.write_stack("bad", "from rh_iac import Cluster, Folder, Stack, Table\n" + body)
    commits = project.commits()
    with pytest.raises(error):
        rh_iac.deploy("bad", project=_project(project))
    assert not (project.root / ".rh_iac" / "bad" / "terraform").exists()
    assert not (project.root / "rns").exists()
    assert project.commits() == commits


def test_stack_file_problems(project):
    p = _project(project)
    with pytest.raises(StackFileError, match="no stack file.*known stacks: local"):
        p.load_stack("nope")
    project.write_stack("two", "from rh_iac import Stack\na = Stack('two')\nb = Stack('two')\n")
    with pytest.raises(StackFileError, match="exactly one Stack"):
        p.load_stack("two")
    project.write_stack("named", "from rh_iac import Stack\ns = Stack('other')\n")
    with pytest.raises(StackFileError, match="name it 'named'"):
        p.load_stack("named")


def test_rh_iac_project_pointing_nowhere_says_so(tmp_path, monkeypatch):
    from rh_iac.project import Project

    monkeypatch.setenv("RH_IAC_PROJECT", str(tmp_path / "nope"))
    with pytest.raises(StackFileError, match=r"RH_IAC_PROJECT=.*/nope is not a folder.*unset it"):
        Project.find()


def _project(proj):
    from rh_iac.project import Project

    return Project(proj.root)


@pytest.mark.parametrize("limit", ["lots", "2 gigs", "-1GB", ""])
def test_memory_limit_must_be_a_size(limit):
    with pytest.raises(InvalidSpecError, match="memory_limit"):
        Cluster("c", memory_limit=limit)


@pytest.mark.parametrize("limit", ["auto", "2GiB", "500MB", "0.5", "1000000000", "4 GB"])
def test_memory_limit_sizes_distributed_accepts(limit):
    assert Cluster("c", memory_limit=limit).memory_limit == limit
