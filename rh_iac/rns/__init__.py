"""The Resource Naming System: every resource's metadata as a JSON record, versioned in git beside the stacks.

- :mod:`rh_iac.rns.addresses`: address forms (``name``, ``~/name``, ``@/name``, ``/team/sub/name``) and the
  current folder (:func:`set_folder`);
- :mod:`rh_iac.rns.store`: the git-backed store (:class:`GitRNS`);
- :mod:`rh_iac.rns.schema`: the metadata standard per resource type, validation and loaders;
- :mod:`rh_iac.rns.history`: versions, diffs and rollback pins.
"""

from rh_iac.rns.addresses import current_folder, current_user, resolve, set_folder
from rh_iac.rns.history import FieldChange, RecordDiff, Version
from rh_iac.rns.schema import SCHEMA_VERSION, validate_record
from rh_iac.rns.store import GitRNS

__all__ = ["FieldChange", "GitRNS", "RecordDiff", "SCHEMA_VERSION", "Version", "current_folder", "current_user",
           "resolve", "set_folder", "validate_record"]
