"""Load a resource back from its RNS record, in any process: ``rh_iac.load("dev-cluster").client()``.

Saved functions and modules come back bound to their cluster: ``rh_iac.load("double")(21)`` runs ``double`` there,
``rh_iac.load("counter")(start=1)`` creates the instance there (see :mod:`rh_iac.coderef` for the records).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from rh_iac.model import Resource
from rh_iac.project import Project
from rh_iac.rns.paths import expand

if TYPE_CHECKING:  # pragma: no cover
    from rh_iac.compute import RemoteFunction
    from rh_iac.modules import ModuleSpec

#: what :func:`load` returns: a declared resource, or saved code bound to its cluster
Loaded = Union[Resource, "RemoteFunction", "ModuleSpec"]

def absolute_outputs(outputs: dict[str, Any], root: Path) -> dict[str, Any]:
    """RNS records project paths relative to the project (see :mod:`rh_iac.rns.paths`); make them usable here.

    Both spellings are understood: ``{project}/...`` (and ``file://{project}/...``), and the older TLS paths
    written relative to the project root.
    """
    outputs = expand(outputs, root)
    tls = outputs.get("tls")
    if isinstance(tls, dict):
        outputs["tls"] = {k: v if not isinstance(v, str) or os.path.isabs(v) else str(root / v) for k, v in tls.items()}
    return outputs


def load(name: str, project: Project | None = None) -> Loaded:
    """What is recorded under ``name`` (any RNS address: ``dev-cluster``, ``~/dev-cluster``, ``@/scratch``,
    ``/team/sub/x``): a resource with its deployed outputs (address, URLs) filled in, or a saved function (a
    :class:`~rh_iac.compute.RemoteFunction`) or module (a :class:`~rh_iac.modules.ModuleSpec`) bound to its
    cluster. Saved code is imported by name, with the project root put on ``sys.path`` if needed.

    The record is checked against the metadata standard first (:func:`rh_iac.rns.schema.validate_record`), so a
    hand-broken record fails with an error naming its file and field; its type's loader then builds the object.
    """
    from rh_iac.rns.schema import LoadContext, display_path, load_record, validate_record

    project = project or Project.find()
    rns = project.rns()
    folder, _, path = rns.locate(name)
    record = validate_record(rns.read(name), display_path(path, project.root))
    return load_record(record, LoadContext(rns, project.root, folder))
