"""The version check at connect time: the client and every node of the cluster must run the same software.

A function travels to the workers pickled by cloudpickle, and a task graph through dask's and distributed's wire
protocol: a client and a cluster whose Python minor version or whose rh_iac, dask, distributed or cloudpickle
versions differ fail later, at some deserialization, with an error that names neither. :func:`check_versions` asks
every node once, at connect time, and raises :class:`~rh_iac.errors.VersionMismatchError` naming each difference::

    check_versions(client, "Cluster 'dev-cluster'")

Python is compared by ``major.minor`` (cloudpickle's bytecode is compatible across micro releases); the message
shows the full versions. Everything else must be equal.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from rh_iac.errors import VersionMismatchError

if TYPE_CHECKING:  # pragma: no cover
    import distributed

__all__ = ["PACKAGES", "local_versions", "check_versions", "compare_versions"]

#: the distributions whose versions must be equal on the client and on every node of a cluster
PACKAGES = ("rh_iac", "dask", "distributed", "cloudpickle")
NOT_INSTALLED = "not installed"

_metadata_versions: dict[str, str] = {}


def _version(package: str) -> str:
    # The version of the code that runs: a module already imported reports its own __version__ (what a long-lived
    # worker actually executes, even if a newer version was installed since); otherwise the installed metadata.
    module = sys.modules.get(package)
    version = getattr(module, "__version__", None)
    if isinstance(version, str) and version:
        return version
    if package not in _metadata_versions:
        from importlib.metadata import PackageNotFoundError, version as metadata_version

        try:
            _metadata_versions[package] = metadata_version(package)
        except PackageNotFoundError:
            return NOT_INSTALLED
    return _metadata_versions[package]


def local_versions() -> dict[str, str]:
    """``{"python": "3.11.7", "rh_iac": ..., "dask": ..., "distributed": ..., "cloudpickle": ...}`` of this process.

    Imports nothing heavy: a package that is not imported yet is looked up in the installed metadata.
    """
    info = sys.version_info
    out = {"python": f"{info.major}.{info.minor}.{info.micro}"}
    for package in PACKAGES:
        out[package] = _version(package)
    return out


def _report() -> dict[str, str]:
    """What a node sends back. Calls this module's ``local_versions`` as found on the node, by name."""
    return local_versions()


def _compat_key(package: str, version: str) -> str:
    if package == "python":
        return ".".join(version.split(".")[:2])
    return version


def compare_versions(
    expected: dict[str, str], nodes: dict[str, dict[str, str] | BaseException]
) -> dict[str, dict[str, list[str]]]:
    """``{package: {version: [node, ...]}}`` of the nodes whose versions differ from ``expected``.

    ``nodes`` maps a node's name to its :func:`local_versions`, or to the exception it raised instead (an older or
    missing rh_iac there cannot run the report): that node counts as differing in rh_iac.
    """
    out: dict[str, dict[str, list[str]]] = {}
    for node, versions in nodes.items():
        if isinstance(versions, BaseException) or not isinstance(versions, dict):
            what = f"could not report ({type(versions).__name__}: {versions})"
            out.setdefault("rh_iac", {}).setdefault(what, []).append(node)
            continue
        for package, mine in expected.items():
            theirs = str(versions.get(package, NOT_INSTALLED))
            if _compat_key(package, theirs) != _compat_key(package, str(mine)):
                out.setdefault(package, {}).setdefault(theirs, []).append(node)
    return out


def _names(nodes: list[str], limit: int = 4) -> str:
    shown = ", ".join(nodes[:limit])
    return shown if len(nodes) <= limit else f"{shown} and {len(nodes) - limit} more"


def _mismatch_message(label: str, expected: dict[str, str], diffs: dict[str, dict[str, list[str]]]) -> str:
    lines = [f"{label}: its nodes run other versions than this client, so code sent there would fail to unpickle "
             f"or behave differently:"]
    wanted: list[str] = []
    for package in sorted(diffs, key=lambda p: (p != "python", p)):
        by_version = diffs[package]
        theirs = "; ".join(f"{_names(nodes)}: {version}" for version, nodes in by_version.items())
        rule = " (major.minor must match)" if package == "python" else ""
        lines.append(f"  {package}: this client {expected.get(package, NOT_INSTALLED)}; {theirs}{rule}")
        installable = [v for v in by_version if not v.startswith("could not report") and v != NOT_INSTALLED]
        if installable:
            common = max(installable, key=lambda v: len(by_version[v]))
            wanted.append(f"Python {common}" if package == "python" else f"{package}=={common}")
    fix = ("Fix: redeploy the cluster from this environment (`invoke destroy`, then `invoke deploy` run with "
           f"this Python, {sys.executable}) so its nodes run this client's versions")
    if wanted:
        pip = [w for w in wanted if not w.startswith("Python ")]
        py = [w for w in wanted if w.startswith("Python ")]
        here = " and ".join(([f"pip install {' '.join(repr(w) for w in pip)}"] if pip else [])
                            + ([f"use {py[0]}"] if py else []))
        fix += f", or match the cluster here: {here}"
    lines.append(fix + ".")
    return "\n".join(lines)


def _gather(client: "distributed.Client") -> tuple[Any, Any]:
    """(worker address -> versions or exception, scheduler versions or exception), in one round trip."""
    run, run_on_scheduler = getattr(client, "_run", None), getattr(client, "_run_on_scheduler", None)
    if run is None or run_on_scheduler is None or getattr(client, "asynchronous", False):  # pragma: no cover
        workers = client.run(_report, on_error="return")
        try:
            scheduler: Any = client.run_on_scheduler(_report)
        except Exception as exc:  # noqa: BLE001 - reported as a difference
            scheduler = exc
        return workers, scheduler

    async def both():
        import asyncio

        # Both requests leave at once: the wait is one round trip (the slower of the two), not two.
        return await asyncio.gather(run(_report, on_error="return"), run_on_scheduler(_report),
                                    return_exceptions=True)

    workers, scheduler = client.sync(both)
    if isinstance(workers, BaseException):
        raise workers
    return workers, scheduler


def check_versions(client: "distributed.Client", label: str, *, expected: dict[str, str] | None = None) -> None:
    """Raise :class:`VersionMismatchError` unless the scheduler and every worker run this client's versions.

    ``expected`` defaults to :func:`local_versions` of this process. ``label`` names the cluster in the message
    (``"Cluster 'dev-cluster'"``). One round trip to the scheduler, which asks the workers in parallel.
    """
    if expected is None:
        expected = local_versions()
    workers, scheduler = _gather(client)
    address = getattr(getattr(client, "scheduler", None), "address", None) or "?"
    nodes: dict[str, Any] = {f"scheduler {address}": scheduler}
    nodes.update((f"worker {w}", v) for w, v in sorted(workers.items()))
    diffs = compare_versions(expected, nodes)
    if diffs:
        raise VersionMismatchError(_mismatch_message(label, expected, diffs))
