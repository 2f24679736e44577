"""Helpers for tests that record a fixture cluster in RNS and make a project's modules importable on its workers.

They live in a module of their own (not in a test file) so that the functions sent with ``client.run`` pickle by
reference: the workers of the test LocalCluster import this module from the same ``tests/`` folder.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path


def record_cluster(proj, cluster) -> None:
    """An RNS record of type cluster for the fixture's cluster (the shape operations._record writes on deploy)."""
    from rh_iac.project import Project

    rns = Project(proj.root).rns()
    rns.write({
        "schema_version": 1, "name": cluster.name, "type": "cluster", "provider": "local", "stack": "local",
        "engine": "terraform", "spec": cluster.spec(), "outputs": dict(cluster.outputs), "status": "deployed",
    })
    rns.commit(f"rns: record test cluster {cluster.name}")


def _add_to_path(root: str) -> None:
    # Not client.run(sys.path.insert, 0, root): a bound method of a list pickles with a copy of the list, so the
    # insert would land in that copy on the worker, not in the worker's sys.path.
    sys.path.insert(0, root)


def _forget_project(root: str, modules: tuple[str, ...]) -> None:
    while root in sys.path:
        sys.path.remove(root)
    for name in modules:
        sys.modules.pop(name, None)


@contextlib.contextmanager
def project_importable(cluster, root: Path, *modules: str):
    """Make the project's modules importable here and on the workers, and forget them afterwards.

    These tests are about saving and loading by reference, not about code sync (tests/test_codesync.py): putting the
    project root on the workers' sys.path by hand keeps them independent of it.
    """
    from rh_iac import compute

    client = compute.connect(cluster)
    sys.path.insert(0, str(root))
    client.run(_add_to_path, str(root))
    try:
        yield
    finally:
        _forget_project(str(root), modules)
        client.run(_forget_project, str(root), modules)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """``predicate()``'s first truthy value, polled for at most ``timeout`` s (a bounded wait, not a timing
    assertion); AssertionError naming ``what`` when it never comes."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_file(path: Path, timeout: float = 60) -> str:
    """The text of ``path`` once a remote call wrote it."""
    return wait_for(lambda: path.is_file() and path.read_text(), timeout, f"{path} to be written", interval=0.05)
