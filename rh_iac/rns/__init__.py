"""The Resource Naming System: every resource's metadata as a JSON record, versioned in git beside the stacks.

:mod:`rh_iac.rns.store` holds the git-backed store (:class:`GitRNS`).
"""

from rh_iac.rns.store import GitRNS

__all__ = ["GitRNS"]
