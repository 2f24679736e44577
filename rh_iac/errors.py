"""Exceptions raised by rh_iac.

Every error names the resource it is about and says what to do. They are grouped so callers can catch a family:
``DeclarationError`` for a stack that is wrong before anything is deployed, ``DeployError`` for the engine,
``RNSError`` for names, ``SecretError`` for secret values, ``ComputeError`` for running code on a cluster.
"""

from __future__ import annotations

from concurrent.futures import CancelledError


class RhIacError(Exception):
    """Base class of every rh_iac error."""


# --- declarations: raised at declaration time, before anything is deployed -------------------------------------
class DeclarationError(RhIacError, ValueError):
    """A stack file declares something invalid."""


class InvalidNameError(DeclarationError):
    """A resource name has characters or a length that rh_iac does not allow."""


class DuplicateResourceError(DeclarationError):
    """Two resources in one stack share a name."""


class UnknownProviderError(DeclarationError):
    """A resource or stack names a provider that rh_iac does not know."""


class InvalidSpecError(DeclarationError):
    """A resource field has a value of the wrong type or out of range."""


class MissingDependencyError(DeclarationError):
    """A resource refers to another resource that the stack does not declare."""


class StackFileError(DeclarationError):
    """A stack file cannot be found, or does not declare exactly one Stack."""


# --- engines -----------------------------------------------------------------------------------------------------
class DeployError(RhIacError):
    """The IaC engine could not plan, apply or destroy a stack."""


class StackLockedError(DeployError):
    """Another process is deploying the same stack right now."""


class EngineNotAvailableError(DeployError):
    """The selected engine or provider cannot run here."""


# --- names -------------------------------------------------------------------------------------------------------
class RNSError(RhIacError):
    """The Resource Naming System cannot resolve or record a name."""


class ResourceNotFoundError(RNSError, LookupError):
    """No RNS record exists for a name."""


class NameTakenError(RNSError):
    """A name is already recorded in RNS by another stack's deployed resource."""


class ResourceNotDeployedError(RNSError):
    """The RNS record exists, but the resource is not deployed (it was destroyed or never applied)."""


# --- secrets -----------------------------------------------------------------------------------------------------
class SecretError(RhIacError):
    """A secret value cannot be stored, read or decrypted."""


# --- compute -----------------------------------------------------------------------------------------------------
class ComputeError(RhIacError):
    """Running code on a cluster failed for a reason other than the code itself."""


class ClusterUnreachableError(ComputeError, ConnectionError):
    """The cluster's scheduler does not answer on its recorded address."""


class RecordCorruptError(RNSError):
    """An RNS record file exists but is not valid JSON, or lacks a required field."""


class InvalidAddressError(RNSError, ValueError):
    """An RNS address (``name``, ``~/name``, ``@/name``, ``/team/sub/name``) or folder is malformed."""


class AmbiguousNameError(RNSError, LookupError):
    """A bare name is not in the current folder and is found in several other folders: give its full address."""


class RecordFieldError(RecordCorruptError):
    """An RNS record's field is missing, has the wrong type, or holds what a record must never hold."""


class SecretInRecordError(RecordFieldError):
    """An RNS record would hold a secret value; secret records hold store, path and fingerprint only."""


class UnsupportedSchemaError(RecordCorruptError):
    """An RNS record declares a schema_version this rh_iac cannot read (newer than it knows, or not a version)."""


class VersionNotFoundError(RNSError, LookupError):
    """A version (commit sha prefix or index) is not in a record's history."""


class VersionMismatchError(ComputeError):
    """The cluster's nodes run other versions of Python or of the packages that must match (rh_iac, dask, ...)."""


class CodeSyncError(ComputeError):
    """The project's code cannot be snapshot or set up on the cluster's workers."""


class CallTimeoutError(ComputeError, TimeoutError):
    """A remote call or map did not finish within its ``timeout`` (or a ``result(timeout=...)`` wait ran out)."""


class CallCancelledError(ComputeError, CancelledError):
    """A remote call was cancelled (``Call.cancel()``, or its timeout ran out) before it produced a result."""


class WorkerDiedError(ComputeError):
    """Every worker that ran a task died while running it, so the scheduler gave up on the task."""


class ModuleLostError(ComputeError):
    """The worker process holding a module's instance died (or left): the instance and its state are gone."""


class ModuleClosedError(ComputeError):
    """A method of a module was called after its ``close()``."""


class CodeReferenceError(RNSError, TypeError):
    """Code that cannot be recorded by reference (a lambda, a nested function, code of ``__main__``)."""


# --- secrets: Vault and provider secrets -------------------------------------------------------------------------
class VaultPermissionError(SecretError, PermissionError):
    """Vault refused a request (HTTP 403): the token is wrong, expired, or its policy does not cover the path."""


class SecretConflictError(SecretError):
    """A check-and-set write found another version than the one it expected (someone else wrote the secret)."""


class UnknownSecretProviderError(SecretError, LookupError):
    """A provider secret names a provider that rh_iac cannot discover credentials for."""


# --- storage -----------------------------------------------------------------------------------------------------
class StorageError(RhIacError):
    """A Folder or Blob operation on its storage (file, memory, s3, gs) failed for a reason rh_iac can name."""


class StoragePathNotFoundError(StorageError, FileNotFoundError):
    """A path inside a Folder (or a Blob's object) does not exist on its storage."""


class BucketNotFoundError(StoragePathNotFoundError):
    """The bucket of a Folder's object-store URL (s3://bucket/..., gs://bucket/...) does not exist or is not visible."""


class NotATableError(StorageError):
    """A table's URL holds files that are not a parquet dataset: rh_iac will not replace (and so delete) them."""


class StorageCopyError(StorageError):
    """A copy between storages failed midway; the destination was not left looking complete."""


class StorageExistsError(StorageError, FileExistsError):
    """A copy's destination already holds data and ``overwrite=True`` was not given."""


class SchemaMismatchError(StorageError, ValueError):
    """Data appended to a Table does not have the table's stored schema (column names, types or pandas dtypes)."""


# --- secrets: stores and delivery --------------------------------------------------------------------------------
class UnknownSecretStoreError(UnknownSecretProviderError, DeclarationError):
    """A Secret declares a ``store`` other than ``local`` or ``vault`` (raised at declaration time)."""


class SecretDeliveryError(SecretError):
    """A secret's values cannot be delivered to (or removed from) a cluster's workers."""


# --- cloud clusters: declarations and Pulumi stack config --------------------------------------------------------
class InvalidCidrError(InvalidSpecError):
    """A CIDR allowlist entry (allowed_cidrs, ssh_cidrs) is not a network such as '203.0.113.0/24'."""


class PublicIngressError(InvalidSpecError):
    """An allowlist opens a cluster to the whole internet (0.0.0.0/0 or ::/0) without ``allow_public=True``."""


class CloudOnlyFieldError(InvalidSpecError):
    """A cloud-only Cluster field (instance_type, spot, region...) is set on a cluster of another provider."""


class StackConfigError(DeclarationError):
    """A value in the Pulumi stack config (Pulumi.<stack>.yaml, namespace rh_iac) is missing or invalid."""


# --- cloud node runtime: bootstrap and readiness ------------------------------------------------------------------
class NodeConfigError(InvalidSpecError):
    """A cloud node's bootstrap config is invalid (role, status URL, scheduler address, or key material inlined)."""


class ClusterNotReadyError(ComputeError, TimeoutError):
    """A deployed cluster's scheduler did not answer over TLS with its workers (or its nodes reported a failed boot)."""


# --- engines: selection ------------------------------------------------------------------------------------------
class UnknownEngineError(EngineNotAvailableError, ValueError):
    """An operation names an IaC engine other than ``terraform`` or ``pulumi``."""


# --- reviews: `invoke preview --markdown/--json` -----------------------------------------------------------------
class ReviewOutputError(RhIacError, ValueError):
    """A preview's review output (Markdown, JSON) cannot be written as asked: conflicting targets, a missing folder."""


# --- RNS sharing, groups and access (rh_iac.rns.remote, gitremote, groups) --------------------------------------
class RecordConflictError(RNSError):
    """A check-and-set write of an RNS record found another version than the one it read: pull, merge, retry.

    ``address``, ``expected_version``, ``current_version`` and the ``rejected`` record are attributes, so nothing
    the losing writer meant to write is lost."""

    def __init__(self, message: str, *, address: str = "", expected_version: int | None = None,
                 current_version: int | None = None, rejected: dict | None = None) -> None:
        super().__init__(message)
        self.address, self.expected_version, self.current_version = address, expected_version, current_version
        self.rejected = rejected


class RemoteStoreError(RNSError):
    """A remote RNS store (an fsspec URL or a git remote) cannot be used as asked."""


class GitRemoteConflictError(RecordConflictError):
    """A git push of RNS commits is not a fast-forward, or a pull would merge changes outside ``rns/``."""


class GroupDeclarationError(DeclarationError):
    """The groups file declares a group wrongly: a bad name, member, access level, defaults key or parent."""


class UnknownGroupError(GroupDeclarationError, LookupError):
    """A stack (or a share) names a group that the project's groups file does not declare."""


class AccessDeniedError(RNSError, PermissionError):
    """A user without write access to an RNS folder tried to write to it (the groups file grants access)."""
