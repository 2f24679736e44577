"""The RNS metadata standard: what a record of each resource type holds, and how it becomes a live object again.

Every record is a JSON object with the envelope fields of :data:`ENVELOPE` (``schema_version``, ``name``, ``type``,
``provider``, ``stack``, ``engine``, ``spec``, ``outputs``, ``status`` and, after a rollback, ``pinned``) and a
``spec`` whose fields depend on the type (:data:`TYPES`). :func:`validate_record` checks a record against this
standard and raises a :class:`~rh_iac.errors.RecordFieldError` naming the file and the field. :func:`load_record` is
the one table-driven way a record becomes an object in a new environment: a cluster whose ``.client()`` connects, a
storage folder, a table, a function bound to its cluster. :func:`build_resource` builds a declared resource from a
spec alone (what a rollback pin deploys).

A record never holds a secret value: secret records hold the store, its path and a fingerprint only, and a ``value``
field anywhere in a secret record is refused, on write and on load.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rh_iac.errors import RecordFieldError, RNSError, SecretInRecordError, UnsupportedSchemaError

if TYPE_CHECKING:  # pragma: no cover
    from rh_iac.model import Resource

#: the schema version records are written with; records without one are version 1
SCHEMA_VERSION = 1
#: the versions this rh_iac reads
READABLE_VERSIONS = (1,)

_STR, _INT, _NUM, _BOOL, _LIST, _DICT, _NONE = (str,), (int,), (int, float), (bool,), (list,), (dict,), (type(None),)
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "an object", type(None): "null"}


@dataclass(frozen=True)
class Field:
    """One field of a record: the JSON types it may have and whether it must be present."""

    types: tuple[type, ...]
    required: bool = False

    def describe(self) -> str:
        names = ["a number" if t is float else _TYPE_NAMES[t] for t in self.types
                 if not (t is int and float in self.types)]
        return " or ".join(names)


#: the fields every record has (``spec`` is checked per type)
ENVELOPE: dict[str, Field] = {
    "schema_version": Field(_INT),
    "name": Field(_STR, True),
    "type": Field(_STR, True),
    "provider": Field(_STR + _NONE),
    "stack": Field(_STR + _NONE),
    "engine": Field(_STR),
    "spec": Field(_DICT),
    "outputs": Field(_DICT),
    "status": Field(_STR + _NONE),
    "pinned": Field(_DICT),
}
#: the fields of a rollback pin (see :mod:`rh_iac.rns.history`)
PIN: dict[str, Field] = {"version": Field(_STR, True), "spec": Field(_DICT, True), "by": Field(_STR),
                         "time": Field(_STR)}


@dataclass(frozen=True)
class TypeSchema:
    """What a record of one type holds in its ``spec``, and how it is loaded.

    ``build(name, spec, provider, dependency)`` makes the declared resource from its spec (``dependency(name)`` gives
    a resource it refers to); ``load(record, context)`` makes the live object of a record (default: ``build`` plus
    the recorded outputs and status)."""

    spec: dict[str, Field]
    build: Callable[..., Any] | None = None
    load: Callable[..., Any] | None = None
    #: spec fields that name other records (resolved relative to the record's folder)
    references: tuple[str, ...] = ()
    #: whether spec fields not listed are allowed
    open: bool = False


# --- builders: spec -> declared resource --------------------------------------------------------------------------
def _cluster(name: str, spec: dict[str, Any], provider: str | None, dependency: Callable[[str], Any]) -> Resource:
    from rh_iac.model import CLOUD_FIELDS, Cluster

    size = ({"min_workers": spec.get("min_workers"), "max_workers": spec["max_workers"]}
            if spec.get("max_workers") is not None else {"workers": spec["workers"]})
    cloud = {k: spec[k] for k in CLOUD_FIELDS if spec.get(k) is not None}
    return Cluster(name, **size, threads_per_worker=spec.get("threads_per_worker", 1),
                   memory_limit=spec.get("memory_limit", "auto"), autostop_mins=spec.get("autostop_mins", 60),
                   env=dependency(spec["env"]) if spec.get("env") else None, provider=provider, **cloud)


def _folder(name: str, spec: dict[str, Any], provider: str | None, dependency: Callable[[str], Any]) -> Resource:
    from rh_iac.model import Folder

    return Folder(name, path=spec.get("path"), storage_options=spec.get("storage_options"), provider=provider)


def _table(name: str, spec: dict[str, Any], provider: str | None, dependency: Callable[[str], Any]) -> Resource:
    from rh_iac.model import Table

    return Table(name, folder=dependency(spec["folder"]), partition_on=spec.get("partition_on", []),
                 provider=provider)


def _blob(name: str, spec: dict[str, Any], provider: str | None, dependency: Callable[[str], Any]) -> Resource:
    from rh_iac.model import Blob

    return Blob(name, folder=dependency(spec["folder"]), provider=provider)


def _env(name: str, spec: dict[str, Any], provider: str | None, dependency: Callable[[str], Any]) -> Resource:
    from rh_iac.model import Env

    return Env(name, packages=spec.get("packages", []), env_vars=spec.get("env_vars"), setup=spec.get("setup", []),
               provider=provider)


def _secret(name: str, spec: dict[str, Any], provider: str | None, dependency: Callable[[str], Any]) -> Resource:
    from rh_iac.model import Secret

    return Secret(name, from_env=spec.get("from_env"), generate=bool(spec.get("generate", False)),
                  store=spec.get("store", "local"), vault_mount=spec.get("vault_mount"),
                  vault_path=spec.get("vault_path"), vault_url=spec.get("vault_url"), provider=provider)


# --- loaders: record -> live object -------------------------------------------------------------------------------
@dataclass
class LoadContext:
    """What a loader needs: the store, the project root, and the folder the record was found in."""

    rns: Any
    root: Path
    folder: str
    _seen: tuple[str, ...] = field(default=())

    def dependency(self, name: str) -> Any:
        """The live object of the record ``name`` refers to (resolved relative to this record's folder)."""
        from rh_iac.rns import addresses

        where, _, path = self.rns.locate(name, folder=self.folder)
        full = addresses.address(where, name.rsplit("/", 1)[-1])
        if full in self._seen:
            raise RNSError(f"RNS records refer to each other in a cycle: {' -> '.join((*self._seen, full))}.")
        record = self.rns.read(name, folder=self.folder)
        validate_record(record, display_path(path, self.root))
        return load_record(record, LoadContext(self.rns, self.root, where, (*self._seen, full)))


def display_path(path: Path, root: Path) -> str:
    """``path`` relative to the project root when inside it (how errors name record files)."""
    try:
        return Path(os.path.relpath(path, root)).as_posix() if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


def _load_resource(record: dict[str, Any], context: LoadContext) -> Resource:
    from rh_iac.resolver import absolute_outputs
    from rh_iac.rns.paths import expand

    schema = TYPES[record["type"]]
    spec = expand(record.get("spec") or {}, context.root)
    if record["type"] == "secret":
        from rh_iac.model import Secret

        resource = Secret.from_record(record)
    else:
        resource = schema.build(record["name"], spec, record.get("provider"), context.dependency)  # type: ignore
    resource.status = record.get("status")
    resource.outputs = (absolute_outputs(dict(record.get("outputs") or {}), context.root)
                        if resource.status == "deployed" else {})
    _check_inside_folder(resource, record, context)
    return resource


def _check_inside_folder(resource: Resource, record: dict[str, Any], context: LoadContext) -> None:
    """A table's or blob's recorded URL must lie inside its folder's: writing a table replaces its whole directory,
    so a record (hand-edited, or pulled from a shared store) pointing elsewhere is refused when loaded."""
    url, folder = resource.outputs.get("url"), getattr(resource, "folder", None)
    folder_url = getattr(folder, "outputs", {}).get("url") if folder is not None else None
    if not isinstance(url, str) or not isinstance(folder_url, str):
        return
    if not url.rstrip("/").startswith(folder_url.rstrip("/") + "/"):
        from rh_iac.errors import RecordFieldError

        raise RecordFieldError(
            f"RNS record {record['name']!r} ({record['type']}): outputs.url {url!r} is not inside its folder "
            f"{folder.name!r} ({folder_url}); fix the record or restore it from git (`invoke rns.history "
            f"{record['name']}`), then redeploy its stack."
        )


def _load_code(record: dict[str, Any], context: LoadContext) -> Any:
    """A saved function (a RemoteFunction) or module (a ModuleSpec), imported by reference, bound to its cluster."""
    from rh_iac.coderef import resolve_reference

    name, kind, spec = record["name"], record["type"], record.get("spec") or {}
    obj = resolve_reference(record, context.root)
    cluster = context.dependency(spec["cluster"])
    if getattr(cluster, "kind", None) != "cluster":
        raise RNSError(f"RNS record {name!r} runs on {spec['cluster']!r}, which is a {getattr(cluster, 'kind', '?')}, "
                       f"not a cluster; save it again bound to a cluster.")
    if kind == "function":
        from rh_iac.compute import Function

        return Function(obj).to(cluster, timeout=spec.get("timeout"), retries=spec.get("retries") or 0,
                                stream_logs=bool(spec.get("stream_logs", False)))
    from rh_iac.modules import ModuleSpec

    return ModuleSpec(obj).options(timeout=spec.get("timeout"),
                                   stream_logs=bool(spec.get("stream_logs", False))).bind(cluster)


_OPT_INT = Field(_INT + _NONE)
_CODE = {"module": Field(_STR, True), "qualname": Field(_STR, True), "cluster": Field(_STR, True),
         "timeout": Field(_NUM + _NONE), "retries": Field(_INT + _NONE), "stream_logs": Field(_BOOL)}

#: the metadata standard: per type, the spec fields and how a record of it is built and loaded
TYPES: dict[str, TypeSchema] = {
    "cluster": TypeSchema({"workers": _OPT_INT, "min_workers": _OPT_INT, "max_workers": _OPT_INT,
                           "threads_per_worker": Field(_INT), "memory_limit": Field(_STR),
                           "autostop_mins": Field(_NUM), "env": Field(_STR + _NONE),
                           # cloud clusters only (rh_iac.model.CLOUD_FIELDS), recorded when declared
                           "instance_type": Field(_STR), "scheduler_instance_type": Field(_STR),
                           "spot": Field(_BOOL), "region": Field(_STR), "allowed_cidrs": Field(_LIST),
                           "allow_public": Field(_BOOL), "ssh_cidrs": Field(_LIST), "disk_gb": Field(_INT),
                           "image": Field(_STR)}, _cluster, _load_resource,
                          ("env",)),
    "folder": TypeSchema({"path": Field(_STR + _NONE), "storage_options": Field(_DICT + _NONE)}, _folder,
                         _load_resource),
    "table": TypeSchema({"folder": Field(_STR, True), "format": Field(_STR), "partition_on": Field(_LIST)}, _table,
                        _load_resource, ("folder",)),
    "blob": TypeSchema({"folder": Field(_STR, True)}, _blob, _load_resource, ("folder",)),
    "secret": TypeSchema({"from_env": Field(_STR + _NONE), "generate": Field(_BOOL), "store": Field(_STR),
                          "vault_mount": Field(_STR + _NONE), "vault_path": Field(_STR + _NONE),
                          "vault_url": Field(_STR + _NONE)}, _secret, _load_resource),
    "env": TypeSchema({"packages": Field(_LIST), "env_vars": Field(_DICT + _NONE), "setup": Field(_LIST)}, _env,
                      _load_resource),
    "function": TypeSchema(_CODE, None, _load_code, ("cluster",), open=True),
    "module": TypeSchema(_CODE, None, _load_code, ("cluster",), open=True),
    # written by lineage runs and group declarations: metadata only, nothing to build
    "run": TypeSchema({}, open=True),
    "group": TypeSchema({}, open=True),
}


def register_type(kind: str, schema: TypeSchema) -> None:
    """Add (or replace) the standard for records of type ``kind``."""
    TYPES[kind] = schema


# --- validation ---------------------------------------------------------------------------------------------------
def _fix(name: object) -> str:
    return f"fix it or restore it with `invoke rns.rollback {name if isinstance(name, str) else '<name>'} 1`"


def _check(value: Any, spec: Field, path: str, where: str, name: object) -> None:
    ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
    if not ok:
        raise RecordFieldError(f"{path}: {where} must be {spec.describe()}, got {value!r}; {_fix(name)}.")


def refuse_secret_value(record: dict[str, Any], path: str) -> None:
    """Raise :class:`SecretInRecordError` if a secret record holds a ``value`` anywhere (it must never)."""
    if record.get("type") != "secret":
        return

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "value":
                    raise SecretInRecordError(
                        f"{path}: {where}{key} would hold a secret's value; RNS records hold the store, path and "
                        f"fingerprint only. Keep the value in the secrets store (rh_iac.secrets) and remove the field."
                    )
                walk(inner, f"{where}{key}.")

    walk(record, "")


def validate_record(record: Any, path: str) -> dict[str, Any]:
    """``record`` if it follows the metadata standard; else a :class:`RecordFieldError` naming ``path`` (the file)
    and the field, e.g. ``rns/dev-cluster.json: spec.workers must be an integer, got 'two'; fix it or restore it with
    `invoke rns.rollback dev-cluster 1```. A newer schema_version raises :class:`UnsupportedSchemaError`."""
    if not isinstance(record, dict):
        raise RecordFieldError(f"{path}: an RNS record must be a JSON object, got {type(record).__name__}.")
    name = record.get("name")
    for key, spec in ENVELOPE.items():
        if key in record:
            _check(record[key], spec, path, key, name)
        elif spec.required:
            raise RecordFieldError(f"{path}: the {key!r} field is missing; {_fix(name)}.")
    version = record.get("schema_version", 1)
    if version not in READABLE_VERSIONS:
        raise UnsupportedSchemaError(
            f"{path}: schema_version {version} is not one this rh_iac reads ({', '.join(map(str, READABLE_VERSIONS))})"
            f"; upgrade rh_iac, or restore the record with `invoke rns.rollback {name} 1`."
        )
    kind = record["type"]
    schema = TYPES.get(kind)
    if schema is None:
        raise RecordFieldError(f"{path}: type {kind!r} is not a known resource type ({', '.join(TYPES)}); "
                               f"{_fix(name)}.")
    refuse_secret_value(record, path)
    spec = record.get("spec") or {}
    for key, field_spec in schema.spec.items():
        if key in spec:
            _check(spec[key], field_spec, path, f"spec.{key}", name)
        elif field_spec.required:
            raise RecordFieldError(f"{path}: spec.{key} is missing; {_fix(name)}.")
    if not schema.open:
        extra = sorted(set(spec) - set(schema.spec))
        if extra:
            raise RecordFieldError(f"{path}: spec.{extra[0]} is not a field of a {kind} record (fields: "
                                   f"{', '.join(schema.spec)}); {_fix(name)}.")
    if kind == "cluster" and spec.get("max_workers") is None and "workers" in spec and spec["workers"] is None:
        raise RecordFieldError(f"{path}: spec.workers must be an integer when max_workers is null; "
                               f"{_fix(name)}.")
    pin = record.get("pinned")
    if pin is not None:
        for key, field_spec in PIN.items():
            if key in pin:
                _check(pin[key], field_spec, path, f"pinned.{key}", name)
            elif field_spec.required:
                raise RecordFieldError(f"{path}: pinned.{key} is missing; drop the pin with "
                                       f"`invoke rns.unpin {name}`.")
    return record


def load_record(record: dict[str, Any], context: LoadContext) -> Any:
    """The live object of a (validated) record, by its type's loader."""
    schema = TYPES[record["type"]]
    if schema.load is None:
        raise RNSError(f"RNS record {record['name']!r} is a {record['type']} record: metadata only, nothing to load; "
                       f"read it with `invoke rns.show {record['name']}`.")
    return schema.load(record, context)


def build_resource(kind: str, name: str, spec: dict[str, Any], provider: str | None,
                   dependency: Callable[[str], Any]) -> Resource:
    """The declared resource of type ``kind`` a spec describes (validated by the DSL as a declaration is)."""
    schema = TYPES.get(kind)
    if schema is None or schema.build is None:
        raise RNSError(f"a {kind} cannot be rebuilt from a recorded spec (known: "
                       f"{', '.join(k for k, s in TYPES.items() if s.build)}).")
    try:
        return schema.build(name, spec, provider, dependency)
    except KeyError as exc:
        raise RecordFieldError(f"the recorded spec of {kind} {name!r} lacks {exc.args[0]!r}.") from None
