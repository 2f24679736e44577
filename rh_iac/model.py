"""The DSL: engine-neutral resource objects, validated when they are declared.

A stack file declares resources inside a :class:`Stack`::

    from rh_iac import Stack, Cluster, Folder, Table, Secret

    with Stack("local", provider="local") as stack:
        Cluster("dev-cluster", workers=2)
        datasets = Folder("datasets")
        Table("flights", folder=datasets)
        Secret("demo-token", from_env="RH_IAC_DEMO_TOKEN", generate=True)

Nothing here knows about Terraform, Pulumi or Dask: a resource is a name, a provider and a ``spec()`` of plain JSON
values. Every check that can be made without deploying is made here, and raises a specific
:class:`~rh_iac.errors.DeclarationError` that names the resource and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, Iterator

from rh_iac.errors import (
    CloudOnlyFieldError,
    DuplicateResourceError,
    InvalidCidrError,
    InvalidNameError,
    InvalidSpecError,
    MissingDependencyError,
    PublicIngressError,
    UnknownProviderError,
)

#: Providers rh_iac knows. Which engine can deploy which provider is the engines' business.
PROVIDERS = ("local", "aws", "gcp")

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$|^[a-z]$")
_ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# what distributed's parse_memory_limit accepts: "auto", a byte count, a fraction of RAM, or a size with a unit
_MEMORY_RE = re.compile(r"^(auto|\d+(\.\d+)?\s*([kmgtp]i?b?|b)?)$", re.IGNORECASE)

#: providers whose clusters run on a cloud's machines (and take the cloud fields of :class:`Cluster`)
CLOUD_PROVIDERS = ("aws", "gcp")
#: Cluster fields that only mean something on a cloud provider
CLOUD_FIELDS = ("instance_type", "scheduler_instance_type", "spot", "region", "allowed_cidrs", "allow_public",
                "ssh_cidrs", "disk_gb", "image")
# machine types: aws "t3.large", gcp "e2-standard-4" / "n2-custom-4-8192"
_INSTANCE_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,62}$")
# regions: aws "us-east-1", "us-gov-west-1"; gcp "us-central1", "europe-west4"
_REGION_RE = re.compile(r"^[a-z]+(-[a-z]+)+-?[0-9]+$")

_current_stack: ContextVar["Stack | None"] = ContextVar("rh_iac_current_stack", default=None)
_declared_stacks: ContextVar["list[Stack] | None"] = ContextVar("rh_iac_declared_stacks", default=None)


def validate_name(name: object, what: str) -> str:
    """Return ``name`` if it is a valid resource name, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or "--" in name:
        raise InvalidNameError(
            f"{what} name {name!r} is invalid: use 1-63 lowercase letters, digits and single hyphens, "
            f"starting with a letter and not ending with a hyphen (e.g. 'dev-cluster')."
        )
    return name


def _validate_provider(provider: object, where: str) -> str:
    if provider not in PROVIDERS:
        raise UnknownProviderError(
            f"{where}: unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}."
        )
    return provider  # type: ignore[return-value]


def _int_field(resource: "Resource", field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpecError(
            f"{resource.label}: {field} must be an integer, got {value!r} ({type(value).__name__})."
        )
    if value < minimum:
        raise InvalidSpecError(f"{resource.label}: {field} must be >= {minimum}, got {value}.")
    return value


def parse_cidrs(values: object, *, allow_public: bool = False) -> list[str]:
    """``values`` as a list of normalized CIDR strings (IPv4 or IPv6 networks, e.g. ``"203.0.113.0/24"``).

    Raises :class:`InvalidCidrError` for an entry that is not a network (host bits set count as a typo), and
    :class:`PublicIngressError` for 0.0.0.0/0 or ::/0 unless ``allow_public``. The messages say what is wrong with
    the value; callers prefix where it came from.
    """
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise InvalidCidrError(f"expected a list of CIDRs such as ['203.0.113.0/24'], got {values!r}")
    cidrs: list[str] = []
    for value in values:
        try:
            network = ipaddress.ip_network(value.strip() if isinstance(value, str) else value, strict=True)
        except (TypeError, ValueError) as exc:
            hint = ""
            if isinstance(value, str):
                try:
                    hint = f" (did you mean {ipaddress.ip_network(value.strip(), strict=False)}?)"
                except ValueError:
                    pass
            raise InvalidCidrError(f"{value!r} is not a network in CIDR notation{hint}: {exc}") from None
        if network.prefixlen == 0 and not allow_public:
            raise PublicIngressError(
                f"{value!r} opens the cluster to the whole internet; list the networks that need access (your "
                f"office or VPN range, e.g. '203.0.113.0/24'), or opt in explicitly with allow_public=True "
                f"(stack config rh_iac:allowPublic: true)"
            )
        if str(network) not in cidrs:
            cidrs.append(str(network))
    return cidrs


def check_instance_type(value: object) -> str:
    """``value`` if it looks like a machine type (``t3.large``, ``e2-standard-4``), else :class:`InvalidSpecError`."""
    if not isinstance(value, str) or not _INSTANCE_TYPE_RE.match(value):
        raise InvalidSpecError(f"{value!r} is not a machine type such as 't3.large' (aws) or 'e2-standard-4' (gcp)")
    return value


def check_region(value: object) -> str:
    """``value`` if it looks like a region (``us-east-1``, ``us-central1``), else :class:`InvalidSpecError`."""
    if not isinstance(value, str) or not _REGION_RE.match(value):
        raise InvalidSpecError(f"{value!r} is not a region such as 'us-east-1' (aws) or 'us-central1' (gcp)")
    return value


def check_disk_gb(value: object) -> int:
    """``value`` if it is a whole number of GB between 10 and 16384, else :class:`InvalidSpecError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 10 <= value <= 16384:
        raise InvalidSpecError(f"{value!r} is not a disk size: give a whole number of GB between 10 and 16384")
    return value


class Resource:
    """Base class of every declared resource.

    A resource created while a :class:`Stack` is the active context registers itself with that stack. Outside a
    stack it is a free-standing object (for instance one loaded back from RNS).
    """

    kind: ClassVar[str] = "resource"

    def __init__(self, name: str, *, provider: str | None = None) -> None:
        self.name = validate_name(name, type(self).__name__)
        if provider is not None:
            _validate_provider(provider, self.label)
        self._provider = provider
        self.stack: Stack | None = None
        #: Values computed by the engine when deployed (scheduler address, URLs...). Filled from RNS on load.
        self.outputs: dict[str, Any] = {}
        #: The RNS status when loaded by name ("deployed", "destroyed", ...); None for a fresh declaration.
        self.status: str | None = None
        stack = _current_stack.get()
        if stack is not None:
            stack.add(self)

    @property
    def label(self) -> str:
        """How errors refer to this resource: ``Cluster 'dev-cluster'``."""
        return f"{type(self).__name__} {self.name!r}"

    @property
    def provider(self) -> str:
        if self._provider is not None:
            return self._provider
        if self.stack is not None:
            return self.stack.provider
        return "local"

    def spec(self) -> dict[str, Any]:
        """The declared fields, as plain JSON values. Subclasses extend it."""
        return {}

    def dependencies(self) -> list["Resource"]:
        """Resources this one refers to; they must be declared in the same stack."""
        return []

    def check_provider(self) -> None:
        """Checks of fields against the resource's provider, once it is known; raises a DeclarationError."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Env(Resource):
    """What a cluster's workers have: pip packages, environment variables, setup commands."""

    kind = "env"

    def __init__(
        self,
        name: str,
        *,
        packages: list[str] | tuple[str, ...] = (),
        env_vars: dict[str, str] | None = None,
        setup: list[str] | tuple[str, ...] = (),
        provider: str | None = None,
    ) -> None:
        super().__init__(name, provider=provider)
        if isinstance(packages, str) or not all(isinstance(p, str) and p.strip() for p in packages):
            raise InvalidSpecError(f"{self.label}: packages must be a list of pip requirement strings.")
        env_vars = dict(env_vars or {})
        for key, value in env_vars.items():
            if not isinstance(key, str) or not _ENV_VAR_RE.match(key):
                raise InvalidSpecError(f"{self.label}: {key!r} is not a valid environment variable name.")
            if not isinstance(value, str):
                raise InvalidSpecError(f"{self.label}: env_vars[{key!r}] must be a string, got {value!r}.")
        if isinstance(setup, str) or not all(isinstance(c, str) for c in setup):
            raise InvalidSpecError(f"{self.label}: setup must be a list of shell command strings.")
        self.packages = list(packages)
        self.env_vars = env_vars
        self.setup = list(setup)

    def spec(self) -> dict[str, Any]:
        return {"packages": self.packages, "env_vars": self.env_vars, "setup": self.setup}


class Cluster(Resource):
    """A Dask cluster: one scheduler and its workers, reachable over mutual TLS only.

    Either a fixed size (``workers=N``, default 2) or adaptive (``min_workers``/``max_workers``: the scheduler starts
    and retires workers with the load). An idle cluster stops itself after ``autostop_mins`` (-1: never; default: the
    stack's group default, else 60); the next deploy brings it back.

    On a cloud provider (``aws``, ``gcp``) these fields choose the machines; each one left out comes from the Pulumi
    stack config (``Pulumi.<stack>.yaml``, see :mod:`rh_iac.providers.cloud_settings`), then a built-in default:

    - ``instance_type`` (workers) and ``scheduler_instance_type``; ``spot=True`` makes the workers spot/preemptible
      (the scheduler is always on-demand); ``disk_gb`` (boot disk) and ``image`` (an AMI id, or a GCP image);
    - ``region``: where the cluster runs (default: the stack's region);
    - ``allowed_cidrs``: the networks that may reach the scheduler (8786) and dashboard (8787). 0.0.0.0/0 and ::/0
      are refused unless ``allow_public=True``; ``[]`` opens nothing outside the cluster's network;
    - ``ssh_cidrs``: port 22 is opened to these networks only, and only when given.

    A fixed size (``workers=N``) only: adaptive scaling is for local clusters. Setting a cloud field on a local
    cluster raises :class:`~rh_iac.errors.CloudOnlyFieldError`.
    """

    kind = "cluster"

    def __init__(
        self,
        name: str,
        *,
        workers: int | None = None,
        min_workers: int | None = None,
        max_workers: int | None = None,
        threads_per_worker: int = 1,
        memory_limit: str = "auto",
        autostop_mins: float | None = None,
        env: Env | None = None,
        instance_type: str | None = None,
        scheduler_instance_type: str | None = None,
        spot: bool | None = None,
        region: str | None = None,
        allowed_cidrs: list[str] | tuple[str, ...] | None = None,
        allow_public: bool = False,
        ssh_cidrs: list[str] | tuple[str, ...] | None = None,
        disk_gb: int | None = None,
        image: str | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(name, provider=provider)
        #: whether the declaration sized the cluster (else a cloud stack's config rh_iac:workers may)
        self.workers_declared = workers is not None or max_workers is not None
        if max_workers is None and min_workers is not None:
            raise InvalidSpecError(f"{self.label}: min_workers needs max_workers too (adaptive scaling between them).")
        if max_workers is not None:
            if workers is not None:
                raise InvalidSpecError(
                    f"{self.label}: give either workers=N (a fixed size) or min_workers/max_workers (adaptive), "
                    f"not both."
                )
            self.min_workers = _int_field(self, "min_workers", 0 if min_workers is None else min_workers, 0)
            self.max_workers = _int_field(self, "max_workers", max_workers, 1)
            if self.min_workers > self.max_workers:
                raise InvalidSpecError(
                    f"{self.label}: min_workers ({self.min_workers}) is above max_workers ({self.max_workers})."
                )
            self.workers = self.min_workers  # what the deploy starts; the scheduler scales from there
        else:
            self.min_workers = self.max_workers = None
            self.workers = _int_field(self, "workers", 2 if workers is None else workers, 0)
        self.threads_per_worker = _int_field(self, "threads_per_worker", threads_per_worker, 1)
        if not isinstance(memory_limit, str) or not _MEMORY_RE.match(memory_limit.strip()):
            raise InvalidSpecError(
                f"{self.label}: memory_limit {memory_limit!r} is not a size: use 'auto', a size such as '2GiB' or "
                f"'500MB', or a fraction of the machine's memory such as '0.5'."
            )
        self.memory_limit = memory_limit
        if autostop_mins is None:
            autostop_mins = _stack_default(self, "autostop_mins", 60)
        if (isinstance(autostop_mins, bool) or not isinstance(autostop_mins, (int, float))
                or not (autostop_mins == -1 or autostop_mins > 0)):
            raise InvalidSpecError(
                f"{self.label}: autostop_mins must be a positive number of idle minutes, or -1 to never stop; "
                f"got {autostop_mins!r}."
            )
        self.autostop_mins = autostop_mins
        if env is not None and not isinstance(env, Env):
            raise InvalidSpecError(f"{self.label}: env must be an Env, got {type(env).__name__}.")
        self.env = env
        self._set_cloud_fields(instance_type=instance_type, scheduler_instance_type=scheduler_instance_type,
                               spot=spot, region=region, allowed_cidrs=allowed_cidrs, allow_public=allow_public,
                               ssh_cidrs=ssh_cidrs, disk_gb=disk_gb, image=image)
        if self._provider is not None or self.stack is not None:
            self.check_provider()

    def _set_cloud_fields(self, **fields: Any) -> None:
        for field in ("instance_type", "scheduler_instance_type"):
            if fields[field] is not None:
                fields[field] = self._checked(field, check_instance_type, fields[field])
        for field in ("spot", "allow_public"):
            if fields[field] is not None and not isinstance(fields[field], bool):
                raise InvalidSpecError(f"{self.label}: {field} must be True or False, got {fields[field]!r}.")
        if fields["region"] is not None:
            fields["region"] = self._checked("region", check_region, fields["region"])
        if fields["disk_gb"] is not None:
            fields["disk_gb"] = self._checked("disk_gb", check_disk_gb, fields["disk_gb"])
        if fields["image"] is not None and (not isinstance(fields["image"], str) or not fields["image"].strip()):
            raise InvalidSpecError(f"{self.label}: image must be an image id or name, got {fields['image']!r}.")
        for field in ("allowed_cidrs", "ssh_cidrs"):
            if fields[field] is not None:
                fields[field] = self._checked(
                    field, lambda v: parse_cidrs(v, allow_public=bool(fields["allow_public"])), fields[field])
        for field, value in fields.items():
            setattr(self, field, value)

    def _checked(self, field: str, check: Any, value: object) -> Any:
        try:
            return check(value)
        except InvalidSpecError as exc:
            raise type(exc)(f"{self.label}: {field}: {exc}.") from None

    @property
    def cloud_fields(self) -> dict[str, Any]:
        """The cloud fields this declaration sets (``allow_public`` only when True)."""
        values = {field: getattr(self, field) for field in CLOUD_FIELDS}
        return {k: v for k, v in values.items() if v is not None and not (k == "allow_public" and v is False)}

    def check_provider(self) -> None:
        """Cloud fields on a non-cloud cluster, and adaptive scaling on a cloud one, are declaration errors."""
        provider = self.provider
        if provider not in CLOUD_PROVIDERS:
            given = list(self.cloud_fields)
            if given:
                verb, pronoun = ("applies", "it") if len(given) == 1 else ("apply", "them")
                raise CloudOnlyFieldError(
                    f"{self.label}: {', '.join(given)} only {verb} to clusters on a cloud provider "
                    f"({', '.join(CLOUD_PROVIDERS)}), and this one is on provider {provider!r}; remove {pronoun}, "
                    f"or declare the cluster with provider='aws' or 'gcp'."
                )
        elif self.adaptive:
            raise InvalidSpecError(
                f"{self.label}: adaptive scaling (min_workers/max_workers) is only available on local clusters; "
                f"on provider {provider!r} give a fixed size with workers=N."
            )

    @property
    def adaptive(self) -> bool:
        """True when the cluster scales itself between ``min_workers`` and ``max_workers``."""
        return self.max_workers is not None

    def spec(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "min_workers": self.min_workers,
            "max_workers": self.max_workers,
            "threads_per_worker": self.threads_per_worker,
            "memory_limit": self.memory_limit,
            "autostop_mins": self.autostop_mins,
            "env": self.env.name if self.env else None,
            **self.cloud_fields,  # only the ones declared, so existing records do not change
        }

    def dependencies(self) -> list[Resource]:
        return [self.env] if self.env else []

    # --- client side: only meaningful once deployed -------------------------------------------------------------
    def client(self, **kwargs: Any):
        """A ``distributed.Client`` connected to this cluster over TLS."""
        from rh_iac.compute import connect

        return connect(self, **kwargs)


class Folder(Resource):
    """A folder of files on some storage, addressed by an fsspec URL (``outputs['url']`` once deployed).

    ``storage_options`` are extra, non-secret fsspec options for the folder's filesystem (e.g.
    ``{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}``); credentials come from the environment
    (``AWS_ACCESS_KEY_ID``...) or a Secret, never from the spec. The data methods (``ls``, ``put``, ``to``...) are in
    :mod:`rh_iac.storage`.
    """

    kind = "folder"

    def __init__(
        self,
        name: str,
        *,
        path: str | None = None,
        storage_options: dict[str, Any] | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(name, provider=provider)
        if path is not None and (not isinstance(path, str) or not path):
            raise InvalidSpecError(f"{self.label}: path must be a non-empty string or None.")
        storage = _stack_default(self, "storage", None) if path is None else None
        self.path = f"{storage.rstrip('/')}/{name}" if storage else path
        self.storage_options = _validate_storage_options(self, storage_options)

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"path": self.path}
        if self.storage_options:  # only when given, so existing folders' records do not change
            spec["storage_options"] = self.storage_options
        return spec

    @property
    def url(self) -> str:
        """The folder's fsspec URL; known once the folder is deployed (or declared with an explicit URL)."""
        if "url" in self.outputs:
            return self.outputs["url"]
        if self.path and "://" in self.path:
            return self.path
        raise _not_deployed(self, "url")

    # --- data: thin wrappers over rh_iac.storage (imported lazily, so `import rh_iac` stays light) ---------------
    def ls(self, path: str = "", detail: bool = False) -> list[Any]:
        """What ``path`` in the folder holds, relative to the folder (see :func:`rh_iac.storage.ls`)."""
        from rh_iac import storage

        return storage.ls(self, path, detail=detail)

    def exists(self, path: str = "") -> bool:
        """Whether ``path`` (default: the folder) exists (see :func:`rh_iac.storage.exists`)."""
        from rh_iac import storage

        return storage.exists(self, path)

    def put(self, local_path: str, remote_path: str = "", recursive: bool = True, **kwargs: Any) -> list[str]:
        """Upload a local file or directory into the folder (see :func:`rh_iac.storage.put`)."""
        from rh_iac import storage

        return storage.put(self, local_path, remote_path, recursive=recursive, **kwargs)

    def get(self, remote_path: str, local_path: str, **kwargs: Any) -> list[str]:
        """Download a file or directory of the folder (see :func:`rh_iac.storage.get`)."""
        from rh_iac import storage

        return storage.get(self, remote_path, local_path, **kwargs)

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        """Open a file of the folder (see :func:`rh_iac.storage.open`)."""
        from rh_iac import storage

        return storage.open(self, path, mode, **kwargs)

    def mkdir(self, path: str = "") -> None:
        """Create a directory in the folder (see :func:`rh_iac.storage.mkdir`)."""
        from rh_iac import storage

        storage.mkdir(self, path)

    def rm(self, path: str = "", recursive: bool = False) -> None:
        """Remove a path of the folder (see :func:`rh_iac.storage.rm`)."""
        from rh_iac import storage

        storage.rm(self, path, recursive=recursive)

    def to(self, system: "str | Folder", *, pattern: str | None = None, **kwargs: Any) -> "Folder":
        """Copy the folder to another storage (a URL or a Folder) and return the Folder there
        (see :func:`rh_iac.storage.copy_to`)."""
        from rh_iac import storage

        return storage.copy_to(self, system, pattern=pattern, **kwargs)


#: storage_options keys that would put a credential into the spec (and so into git)
_SECRET_OPTION_RE = re.compile(r"secret|token|passw|credential|private|signature|(^|_)key($|_|s$)|^sas", re.IGNORECASE)


def _validate_storage_options(resource: Resource, options: object) -> dict[str, Any] | None:
    import json

    if options is None:
        return None
    if not isinstance(options, dict):
        raise InvalidSpecError(f"{resource.label}: storage_options must be a dict of fsspec options or None.")

    def walk(value: object, where: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if not isinstance(key, str):
                    raise InvalidSpecError(f"{resource.label}: storage_options{where} has a non-string key {key!r}.")
                if _SECRET_OPTION_RE.search(key):
                    raise InvalidSpecError(
                        f"{resource.label}: storage_options{where}[{key!r}] looks like a credential; it would be "
                        f"recorded in the folder's spec (and in git). Give credentials through the environment "
                        f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, "
                        f"GOOGLE_APPLICATION_CREDENTIALS) or a Secret delivered to where the folder is used."
                    )
                walk(inner, f"{where}[{key!r}]")
        elif isinstance(value, (list, tuple)):
            for i, inner in enumerate(value):
                walk(inner, f"{where}[{i}]")

    walk(options, "")
    try:
        return json.loads(json.dumps(options))
    except (TypeError, ValueError):
        raise InvalidSpecError(f"{resource.label}: storage_options must hold plain JSON values.") from None


class Table(Resource):
    """A table stored as parquet files in a :class:`Folder`."""

    kind = "table"

    def __init__(
        self,
        name: str,
        *,
        folder: Folder,
        partition_on: list[str] | tuple[str, ...] = (),
        provider: str | None = None,
    ) -> None:
        super().__init__(name, provider=provider)
        if not isinstance(folder, Folder):
            raise MissingDependencyError(
                f"{self.label}: folder must be a Folder declared in the stack, got {folder!r}."
            )
        if isinstance(partition_on, str) or not all(isinstance(c, str) and c for c in partition_on):
            raise InvalidSpecError(f"{self.label}: partition_on must be a list of column names.")
        self.folder = folder
        self.partition_on = list(partition_on)

    def spec(self) -> dict[str, Any]:
        return {"folder": self.folder.name, "format": "parquet", "partition_on": self.partition_on}

    def dependencies(self) -> list[Resource]:
        return [self.folder]

    @property
    def url(self) -> str:
        if "url" in self.outputs:
            return self.outputs["url"]
        if "url" not in self.folder.outputs and not (self.folder.path and "://" in self.folder.path):
            raise _not_deployed(self, "url")
        return self.folder.url.rstrip("/") + "/" + self.name

    # --- data: thin wrappers over rh_iac.data (imported lazily, so `import rh_iac` stays light) ------------------
    def write(self, df: Any, **kwargs: Any) -> "Table":
        """Write a pandas, pyarrow or dask dataframe as the table's data (see :func:`rh_iac.data.write_table`)."""
        from rh_iac import data

        data.write_table(self, df, **kwargs)
        return self

    def append(self, df: Any, **kwargs: Any) -> "Table":
        """Add rows with the table's schema (see :func:`rh_iac.data.append_table`)."""
        from rh_iac import data

        data.append_table(self, df, **kwargs)
        return self

    def fetch(self, columns: list[str] | None = None, as_: str = "pandas") -> Any:
        """The table's data as a ``pandas.DataFrame`` (``as_="pandas"``) or a ``pyarrow.Table`` (``as_="arrow"``)."""
        from rh_iac import data

        if as_ == "arrow":
            return data.read_arrow(self, columns)
        if as_ == "pandas":
            return data.read_table(self, columns)
        raise ValueError(f"{self.label}: as_ must be 'pandas' or 'arrow' (use .to_dask() for dask), got {as_!r}.")

    def to_dask(self, columns: list[str] | None = None, **kwargs: Any) -> Any:
        """The table as a lazy dask dataframe read by the workers (see :func:`rh_iac.data.table_to_dask`)."""
        from rh_iac import data

        return data.table_to_dask(self, columns, **kwargs)

    def stream(self, batch_size: int, columns: list[str] | None = None) -> Any:
        """Iterate over the table in pandas batches of at most ``batch_size`` rows (see
        :func:`rh_iac.data.stream_table`)."""
        from rh_iac import data

        return data.stream_table(self, batch_size, columns)


class Blob(Resource):
    """One object (bytes or a picklable value) in a :class:`Folder`."""

    kind = "blob"

    def __init__(self, name: str, *, folder: Folder, provider: str | None = None) -> None:
        super().__init__(name, provider=provider)
        if not isinstance(folder, Folder):
            raise MissingDependencyError(f"{self.label}: folder must be a Folder declared in the stack.")
        self.folder = folder

    def spec(self) -> dict[str, Any]:
        return {"folder": self.folder.name}

    def dependencies(self) -> list[Resource]:
        return [self.folder]

    @property
    def url(self) -> str:
        """The blob's object URL: its folder's URL + ``/`` + its name (a pickled value is at ``<url>.pickle``)."""
        if "url" in self.outputs:
            return self.outputs["url"]
        return self.folder.url.rstrip("/") + "/" + self.name

    # --- data: thin wrappers over rh_iac.storage (imported lazily) ------------------------------------------------
    def write(self, value: Any) -> "Blob":
        """Store ``value`` (bytes as they are, anything else pickled); see :func:`rh_iac.storage.write_blob`."""
        from rh_iac import storage

        storage.write_blob(self, value)
        return self

    def fetch(self) -> Any:
        """The stored value; see :func:`rh_iac.storage.fetch_blob`."""
        from rh_iac import storage

        return storage.fetch_blob(self)

    def exists(self) -> bool:
        """Whether the blob holds a value."""
        from rh_iac import storage

        return storage.blob_exists(self)

    def rm(self, missing_ok: bool = False) -> None:
        """Remove the stored value; see :func:`rh_iac.storage.rm_blob`."""
        from rh_iac import storage

        storage.rm_blob(self, missing_ok=missing_ok)

    def to(self, system: "str | Folder") -> "Blob":
        """Copy the blob into another folder (a URL or a Folder) and return the Blob there."""
        from rh_iac import storage

        return storage.copy_blob(self, system)


class Secret(Resource):
    """A secret value kept in a secrets store; only its name and fingerprint are ever recorded.

    ``store`` says where the value lives: ``"local"`` (the default: encrypted in the stack's local store, keyed by a
    file outside the repository) or ``"vault"`` (HashiCorp Vault KV v2 at ``<vault_mount>/<vault_path>/<name>``, on
    ``vault_url`` or ``$VAULT_ADDR``; the token comes from ``$VAULT_TOKEN`` or ``~/.vault-token`` and is never part of
    the spec). For the local store the value is read at deploy time from the environment variable ``from_env``; with
    ``generate=True`` a random token is created when that variable is unset and no value exists yet. A Vault secret
    may have neither: its value is then the one already in Vault.

    ``value()`` reads the value; ``to(cluster, as_env=..., as_file=...)`` hands it to every worker of a cluster
    (:mod:`rh_iac.secrets.delivery`); ``Secret.from_provider("aws")`` gives discovered provider credentials.
    """

    kind = "secret"
    #: where a Secret's value can be kept
    STORES: ClassVar[tuple[str, ...]] = ("local", "vault")

    def __init__(
        self,
        name: str,
        *,
        from_env: str | None = None,
        generate: bool = False,
        store: str = "local",
        vault_mount: str | None = None,
        vault_path: str | None = None,
        vault_url: str | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(name, provider=provider)
        if store not in self.STORES:
            from rh_iac.errors import UnknownSecretStoreError

            raise UnknownSecretStoreError(
                f"{self.label}: unknown secret store {store!r}; choose one of {', '.join(self.STORES)} "
                f"(local: encrypted on this machine, the default; vault: HashiCorp Vault KV v2)."
            )
        if from_env is not None and (not isinstance(from_env, str) or not _ENV_VAR_RE.match(from_env)):
            raise InvalidSpecError(f"{self.label}: from_env {from_env!r} is not a valid environment variable name.")
        if not isinstance(generate, bool):
            raise InvalidSpecError(f"{self.label}: generate must be True or False.")
        if store == "local" and from_env is None and not generate:
            raise InvalidSpecError(
                f"{self.label}: give the value a source: from_env='VAR_NAME', generate=True, or both."
            )
        self.store = store
        if store == "vault":
            self.vault_mount = self._vault_option("vault_mount", "mount", vault_mount or "secret")
            self.vault_path = self._vault_option("vault_path", "path", vault_path or "rh_iac")
            if vault_url is not None and (not isinstance(vault_url, str) or "://" not in vault_url):
                raise InvalidSpecError(
                    f"{self.label}: vault_url {vault_url!r} is not an address such as 'https://vault.example.com:8200'."
                )
            if vault_url is not None and "@" in vault_url.split("://", 1)[1].split("/", 1)[0]:
                raise InvalidSpecError(f"{self.label}: vault_url must not carry credentials; use $VAULT_TOKEN.")
            self.vault_url = vault_url
        else:
            given = [k for k, v in (("vault_mount", vault_mount), ("vault_path", vault_path),
                                    ("vault_url", vault_url)) if v is not None]
            if given:
                raise InvalidSpecError(f"{self.label}: {', '.join(given)} only apply to store='vault'.")
            self.vault_mount = self.vault_path = self.vault_url = None
        self.from_env = from_env
        self.generate = generate

    def _vault_option(self, field: str, what: str, value: object) -> str:
        from rh_iac.errors import SecretError
        from rh_iac.secrets.vault import _clean_path

        try:
            return _clean_path(what, value)  # type: ignore[arg-type]
        except SecretError as exc:
            raise InvalidSpecError(f"{self.label}: {field}: {exc}") from None

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"from_env": self.from_env, "generate": self.generate}
        if self.store != "local":  # only when not the default, so existing local secrets' records do not change
            spec.update(store=self.store, vault_mount=self.vault_mount, vault_path=self.vault_path,
                        vault_url=self.vault_url)
        return spec

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Secret":
        """The Secret an RNS record describes (store and Vault location included); no value is involved."""
        spec = record.get("spec") or {}
        secret = cls(record["name"], from_env=spec.get("from_env"), generate=bool(spec.get("generate", False)),
                     store=spec.get("store", "local"), vault_mount=spec.get("vault_mount"),
                     vault_path=spec.get("vault_path"), vault_url=spec.get("vault_url"),
                     provider=record.get("provider"))
        secret._recorded_stack = record.get("stack")
        secret.status = record.get("status")
        return secret

    # --- values: read on request, never stored on the object ------------------------------------------------------
    def _record(self, project: Any) -> dict[str, Any]:
        from rh_iac.errors import RNSError

        record = project.rns().read(self.name)
        if record.get("type") != "secret":
            raise RNSError(f"RNS record {self.name!r} is a {record.get('type')}, not a secret.")
        return record

    def vault_store(self) -> Any:
        """The :class:`~rh_iac.secrets.VaultSecretStore` holding this secret (store='vault' only)."""
        from rh_iac.secrets.vault import VaultSecretStore

        if self.store != "vault":
            raise InvalidSpecError(f"{self.label} is kept in the {self.store} store, not in Vault.")
        return VaultSecretStore(url=self.vault_url, mount=self.vault_mount or "secret",
                                path=self.vault_path or "rh_iac")

    def value(self, project: Any = None) -> str:
        """The secret's value, read from its store now (never cached on the object, never logged).

        local: from the encrypted store of the stack that deployed it (the declaring stack, or the ``stack`` of its
        RNS record in ``project``, default :meth:`Project.find`); vault: from Vault. A loaded record's store and Vault
        location are taken from the record, so this works whatever rebuilt the object.
        """
        from rh_iac.errors import ResourceNotDeployedError, ResourceNotFoundError, SecretError

        target: Secret = self
        stack = self.stack.name if self.stack is not None else getattr(self, "_recorded_stack", None)
        if self.store == "local" and (stack is None or self.status is not None):
            from rh_iac.project import Project

            project = project or Project.find()
            try:
                record = self._record(project)
            except ResourceNotFoundError:
                if stack is None:
                    raise ResourceNotDeployedError(
                        f"{self.label} has no value yet: deploy the stack that declares it (`invoke deploy`)."
                    ) from None
                record = None
            if record is not None:
                if record.get("status") != "deployed":
                    raise ResourceNotDeployedError(
                        f"{self.label} is {record.get('status')} (per its RNS record), so its value is gone; deploy "
                        f"its stack again (`invoke deploy --stack {record.get('stack')}`)."
                    )
                if (record.get("spec") or {}).get("store", "local") != "local":
                    target = Secret.from_record(record)  # e.g. rebuilt without its store by an older resolver
                stack = record.get("stack") or stack
        if target.store == "vault":
            return target.vault_store().get(self.name)
        from rh_iac.project import Project
        from rh_iac.providers.local.secret import store_for

        project = project or Project.find()
        store = store_for(project.state_dir(stack))
        if not store.exists(self.name):
            raise SecretError(
                f"{self.label}: no value in stack {stack!r}'s local store ({store.root}); deploy the stack "
                f"(`invoke deploy --stack {stack}`) on this machine, with the same RH_IAC_HOME key."
            )
        return store.get(self.name)

    def to(self, cluster: Any, as_env: Any = None, as_file: Any = None, *, project: Any = None) -> Any:
        """Deliver the value to every worker of ``cluster`` (see :func:`rh_iac.secrets.delivery.deliver`).

        ``as_env``: the environment variable to set in each worker process; ``as_file``: a file name, written with
        mode 0600 under each worker's local_directory. With neither, ``as_env`` is the name upper-cased with ``-``
        turned into ``_`` (``demo-token`` -> ``DEMO_TOKEN``). The value travels only over the cluster's TLS
        connection; nothing is written on this side. Returns a :class:`~rh_iac.secrets.delivery.SecretDelivery`.
        """
        from rh_iac.secrets.delivery import deliver

        if as_env is None and as_file is None:
            as_env = self.name.upper().replace("-", "_")
        return deliver({"value": self.value(project)}, cluster, as_env=as_env, as_file=as_file, name=self.name)

    def revoke(self, cluster: Any) -> bool:
        """Remove this secret's delivery from ``cluster``'s workers (variables restored, files removed)."""
        from rh_iac.secrets.delivery import revoke

        return revoke(self.name, cluster)

    @staticmethod
    def from_provider(provider: str, *, name: str | None = None, **discover_kwargs: Any) -> Any:
        """Credentials of ``provider`` (aws, gcp, huggingface, github, ssh, custom) discovered from its standard
        files and environment variables (:func:`rh_iac.secrets.discover`), as a transient
        :class:`~rh_iac.secrets.delivery.ProviderSecret`: held in memory only, never recorded in RNS;
        ``.to(cluster)`` sets them on the workers under their usual variable names."""
        from rh_iac.secrets.delivery import ProviderSecret
        from rh_iac.secrets.providers import discover

        key = provider.strip().lower() if isinstance(provider, str) else provider
        return ProviderSecret(key, discover(provider, **discover_kwargs), name=name)


def _stack_default(resource: Resource, key: str, fallback: Any) -> Any:
    """The default ``key`` of the group of ``resource``'s stack (see :class:`Stack`), else ``fallback``."""
    stack = resource.stack
    return stack.defaults.get(key, fallback) if stack is not None else fallback


class Stack:
    """A named set of resources deployed together, on one default provider.

    ``group`` (a group name from the project's ``stacks/_groups.py``, or a :class:`~rh_iac.rns.groups.Group`) gives
    the stack its group's defaults (:mod:`rh_iac.rns.groups`): ``provider``, ``region``, ``stage`` for the stack,
    ``autostop_mins`` for its clusters and ``storage`` (a base URL) for folders declared without a path. A value
    given explicitly, here or on a resource, always wins. Only the group's members may deploy it."""

    def __init__(self, name: str, *, provider: str | None = None, description: str = "", group: Any = None,
                 region: str | None = None, stage: str | None = None) -> None:
        self.name = validate_name(name, "Stack")
        self.group = group
        self.defaults: dict[str, Any] = {}
        if group is not None:
            from rh_iac.rns.groups import Group, defaults_for

            if not isinstance(group, (str, Group)):
                raise InvalidSpecError(f"Stack {name!r}: group must be a group name or a Group, got {group!r}.")
            self.defaults = defaults_for(group)
        self.provider = _validate_provider(provider or self.defaults.get("provider", "local"), f"Stack {name!r}")
        self.region = region or self.defaults.get("region")
        self.stage = stage or self.defaults.get("stage", "dev")
        if self.stage not in ("dev", "prod"):
            raise InvalidSpecError(f"Stack {name!r}: stage must be 'dev' or 'prod', got {self.stage!r}.")
        self.description = description
        self._resources: dict[str, Resource] = {}
        self._token = None
        collector = _declared_stacks.get()
        if collector is not None:
            collector.append(self)

    # --- declaration ----------------------------------------------------------------------------------------------
    def __enter__(self) -> "Stack":
        self._token = _current_stack.set(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        _current_stack.reset(self._token)
        self._token = None
        if exc_type is None:
            self.validate()

    def add(self, resource: Resource) -> Resource:
        """Add ``resource`` to the stack; names are unique within a stack."""
        if resource.name in self._resources:
            other = self._resources[resource.name]
            raise DuplicateResourceError(
                f"Stack {self.name!r}: {resource.label} has the same name as {other.label}; "
                f"names are unique within a stack, rename one of them."
            )
        if resource.stack is not None and resource.stack is not self:
            raise DuplicateResourceError(f"{resource.label} is already declared in stack {resource.stack.name!r}.")
        resource.stack = self
        self._resources[resource.name] = resource
        return resource

    def validate(self) -> "Stack":
        """Check references between resources; raises a :class:`DeclarationError`."""
        for resource in self._resources.values():
            resource.check_provider()
            for dep in resource.dependencies():
                if self._resources.get(dep.name) is not dep:
                    raise MissingDependencyError(
                        f"{resource.label} refers to {dep.label}, which stack {self.name!r} does not declare; "
                        f"declare it inside the same `with Stack(...)` block."
                    )
        return self

    # --- access ---------------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Resource]:
        return iter(self._resources.values())

    def __len__(self) -> int:
        return len(self._resources)

    def __getitem__(self, name: str) -> Resource:
        return self._resources[name]

    def __contains__(self, name: object) -> bool:
        return name in self._resources

    def resources(self, kind: str | None = None) -> list[Resource]:
        return [r for r in self._resources.values() if kind is None or r.kind == kind]

    def __repr__(self) -> str:
        return f"Stack({self.name!r}, provider={self.provider!r}, resources={list(self._resources)})"


@contextmanager
def collect_stacks() -> Iterator[list[Stack]]:
    """Collect every Stack created in the block (how a stack file is read: ``with Stack(...):`` needs no name)."""
    stacks: list[Stack] = []
    token = _declared_stacks.set(stacks)
    try:
        yield stacks
    finally:
        _declared_stacks.reset(token)


def _not_deployed(resource: Resource, field: str):
    from rh_iac.errors import ResourceNotDeployedError

    if resource.status is not None:  # loaded from RNS, so the record says why
        stack = f" --stack {resource.stack.name}" if resource.stack else ""
        return ResourceNotDeployedError(
            f"{resource.label} is {resource.status} (per its RNS record), so it has no {field}; "
            f"deploy its stack again (`invoke deploy{stack}`)."
        )
    return ResourceNotDeployedError(
        f"{resource.label} has no {field} yet: deploy its stack (`invoke deploy`) or load it by name "
        f"with rh_iac.load({resource.name!r})."
    )
