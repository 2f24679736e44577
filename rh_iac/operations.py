"""The everyday operations on a stack — deploy, preview, status, destroy — as library calls.

``tasks.py`` only wraps these. Each one loads and validates the stack file first, so an invalid declaration fails
before the engine runs; deploy and destroy hold the stack's lock and record the outcome in RNS. ``engine`` picks who
plans and applies: ``"terraform"`` (the default; provider local) or ``"pulumi"`` (every provider, through the
Automation API and the pulumi CLI). Both record the same RNS records, so ``rh_iac.load(name)`` does not care.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from rh_iac.engines.terraform import Plan, TerraformEngine
from rh_iac.errors import EngineNotAvailableError, NameTakenError, RNSError, StackFileError, UnknownEngineError
from rh_iac.locks import stack_lock
from rh_iac.model import Resource, Stack
from rh_iac.project import Project
from rh_iac.providers import pulumi_target, terraform_target
from rh_iac.rns.history import apply_pins
from rh_iac.rns.paths import portable
from rh_iac.rns.schema import SCHEMA_VERSION as RNS_SCHEMA_VERSION

#: the IaC engines a stack can be deployed with
ENGINES = ("terraform", "pulumi")
#: how long a deploy waits for a cloud cluster's nodes to boot and report ready
READY_TIMEOUT_S = 900.0
#: the RNS folder a stack's resources are recorded in: this repository's local RNS (``rns/<name>.json``)
LOCAL = "~"


@dataclass
class DeployResult:
    stack: str
    plan: Plan
    applied: bool
    rns_commit: str | None
    records: list[dict[str, Any]] = field(default_factory=list)
    #: resources built from a rollback pin instead of the stack file (see rh_iac.rns.history.apply_pins)
    notices: list[Any] = field(default_factory=list)


@dataclass
class Preview:
    stack: str
    plan: Plan
    rns_changes: dict[str, tuple[dict | None, dict | None]]
    #: the project folder, so reviews (rh_iac.review) can write its paths as ``{project}``
    root: Path | None = None
    #: resources the deploy would build from a rollback pin instead of the stack file
    notices: list[Any] = field(default_factory=list)


@dataclass
class ResourceStatus:
    name: str
    kind: str
    state: str  # "healthy" | "degraded" | "stopped" | "not deployed"
    detail: str
    outputs: dict[str, Any] = field(default_factory=dict)


def _engine(project: Project, stack: Stack) -> tuple[TerraformEngine, Any]:
    target = terraform_target(stack.provider)
    state_dir = project.state_dir(stack.name)
    provider = target.provider_spec(stack, state_dir, project.root, project.plugin_dir)
    blocks = [b for b in (target.render(r) for r in stack) if b is not None]
    return TerraformEngine(stack.name, state_dir / "terraform", provider, blocks), target


def _record(resource: Resource, stack: Stack, attributes: dict[str, Any] | None, outputs: tuple[str, ...],
            root: Path | None = None, *, provisioned: bool = True, engine: str = "terraform") -> dict:
    """The RNS record of a resource: what was declared and what the engine computed; never a secret value.

    ``provisioned=False`` is for what the engine has nothing to create for (an Env, a folder on existing storage):
    it is in service as soon as its stack is deployed."""
    deployed = attributes is not None or not provisioned
    values = {k: attributes[k] for k in outputs if attributes and attributes.get(k) is not None}
    return {
        "schema_version": RNS_SCHEMA_VERSION,
        "name": resource.name,
        "type": resource.kind,
        "provider": resource.provider,
        "stack": stack.name,
        "engine": engine,
        "spec": portable(resource.spec(), root),
        "outputs": portable(values, root),
        "status": "deployed" if deployed else "not deployed",
    }


def _records(stack: Stack, state: dict[str, dict[str, Any]], target: Any, root: Path) -> list[dict]:
    return [_record(r, stack, state.get(r.name), target.OUTPUTS.get(r.kind, ()), root,
                    provisioned=target.render(r) is not None) for r in stack]


def pulumi_records(stack: Stack, outputs: Mapping[str, Any], target: Any, root: Path) -> list[dict]:
    """The RNS records of ``stack`` after a Pulumi ``up``, from its stack outputs (``{resource: OutputValue}`` as the
    Automation API returns them, or plain dicts), written exactly as the Terraform engine's. A resource with no
    output entry has no infrastructure of its own (an Env, a folder on existing storage): in service once deployed.
    Secret outputs are never recorded."""
    from rh_iac.engines.pulumi import plain_outputs

    plain = plain_outputs(outputs)
    return [_record(r, stack, plain.get(r.name), target.OUTPUTS.get(r.kind, ()), root, provisioned=r.name in plain,
                    engine="pulumi") for r in stack]


def _load(project: Project | None, stack_name: str) -> tuple[Project, Stack]:
    project = project or Project.find()
    if not project.stack_file(stack_name).is_file() and (project.root / f"Pulumi.{stack_name}.yaml").is_file():
        raise StackFileError(
            f"{stack_name!r} is a Pulumi stack (Pulumi.{stack_name}.yaml), not a stack file under stacks/; use the "
            f"Pulumi engine: `invoke deploy --engine pulumi --stack {stack_name}`."
        )
    return project, project.load_stack(stack_name)


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise UnknownEngineError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)} "
                                 f"(`invoke deploy --engine pulumi`).")


def _pulumi(project: Project | None, stack_name: str, pulumi_stack: str | None,
            on_output: Callable[[str], None] | None) -> tuple[Project, Stack, Any, Any]:
    """``(project, stack, PulumiEngine, Pulumi target)``; the CLI is looked for first, the stack validated next."""
    from rh_iac.engines import pulumi as pulumi_engine

    pulumi_engine.find_cli()
    project = project or Project.find()
    stack_file, pulumi_stack = pulumi_engine.resolve(project, stack_name, pulumi_stack)
    stack = project.load_stack(stack_file)
    target = pulumi_target(stack.provider)
    return project, stack, pulumi_engine.PulumiEngine(project, stack_file, pulumi_stack, on_output=on_output), target


def _write_records(rns: Any, stack: Stack, records: list[dict]) -> None:
    """Write a deploy's records; resources removed from the stack file were destroyed by it."""
    for record in records:
        rns.write(record, folder=LOCAL)
    for name in rns.list(LOCAL):
        if name not in stack:
            try:
                old = rns.read(f"{LOCAL}/{name}")
            except RNSError:
                continue  # a hand-broken record of some other resource: not this deploy's to judge
            if old.get("stack") == stack.name and old.get("status") != "destroyed":
                rns.write({**old, "outputs": {}, "status": "destroyed"}, folder=LOCAL)


def _record_destroyed(rns: Any, stack: Stack, engine: str, root: Path) -> list[dict]:
    records = []
    for resource in stack:
        try:
            owner = rns.read(f"{LOCAL}/{resource.name}").get("stack")
        except RNSError:
            owner = None
        if owner not in (None, stack.name):
            continue  # the name belongs to another stack's record: not ours to mark destroyed
        record = _record(resource, stack, None, (), root, engine=engine)
        record["status"] = "destroyed"
        records.append(record)
        rns.write(record, folder=LOCAL)
    return records


def expected_workers(cluster: Resource, config: Mapping[str, Any]) -> int:
    """How many workers a deployed cloud cluster must have: its declaration's, else the stack config's
    ``rh_iac:workers`` (what the rendering used), else the declaration's default."""
    if getattr(cluster, "adaptive", False):
        return cluster.min_workers or 0
    configured = config.get("rh_iac:workers")
    if not getattr(cluster, "workers_declared", True) and configured is not None:
        return int(configured)
    return cluster.workers


def wait_for_clusters(stack: Stack, records: list[dict], root: Path, *, config: Mapping[str, Any] | None = None,
                      timeout: float = READY_TIMEOUT_S, since: float | None = None,
                      progress: Callable[[str], None] | None = None) -> None:
    """Block until every cloud cluster of a deploy answers over TLS with its workers and its nodes reported ready;
    :class:`~rh_iac.errors.ClusterNotReadyError` (saying why, with the nodes' bootstrap log) when they do not.
    ``config`` is the Pulumi stack's config (for a worker count the declaration leaves to it); a node failure
    reported after ``since`` (a ``time.time()`` from before the deploy) ends the wait at once."""
    from rh_iac.resolver import absolute_outputs
    from runtime.readiness import wait_ready

    for record in records:
        resource = stack[record["name"]]
        if record["type"] != "cluster" or resource.provider == "local" or record["status"] != "deployed":
            continue
        outputs = absolute_outputs(dict(record["outputs"]), root)
        wait_ready(outputs["scheduler_address"], outputs["tls"], outputs["status_url"], timeout=timeout,
                   workers=expected_workers(resource, config or {}), label=resource.label, since=since,
                   progress=progress)


def preflight(project: Project, stack: Stack, target: Any) -> None:
    """Every check that needs the project or the environment, made before the engine touches anything."""
    for resource in stack:
        if resource.provider != stack.provider:
            raise EngineNotAvailableError(
                f"{resource.label} declares provider {resource.provider!r} inside stack {stack.name!r} (provider "
                f"{stack.provider!r}); a stack deploys one provider: move it to a stack of its own."
            )
    rns = project.rns()
    rns.ensure_repo()
    from rh_iac.rns.groups import check_deploy

    check_deploy(project.root, stack)  # a stack declared with group= is deployed by that group's members only
    taken = []
    for name in sorted(set(rns.list(LOCAL)) & {r.name for r in stack}):
        try:
            record = rns.read(f"{LOCAL}/{name}")
        except RNSError:
            continue  # a corrupt record is rewritten by this deploy
        if record.get("stack") not in (None, stack.name) and record.get("status") == "deployed":
            taken.append(f"{stack[name].label} (taken by the deployed {record.get('type')} of stack "
                         f"{record['stack']!r}, rns/{name}.json)")
    if taken:
        raise NameTakenError(
            f"stack {stack.name!r}: names already taken in RNS by other stacks: {'; '.join(taken)}. Rename them, "
            f"or destroy the stacks that own them first."
        )
    check = getattr(target, "preflight", None)
    if check is not None:
        check(stack, project.state_dir(stack.name))


def deploy(stack_name: str = "local", project: Project | None = None, *, engine: str = "terraform",
           pulumi_stack: str | None = None, on_output: Callable[[str], None] | None = None,
           ready_timeout: float = READY_TIMEOUT_S) -> DeployResult:
    """Plan the stack and apply the plan if it changes anything; then record every resource in RNS and commit.

    With ``engine="pulumi"``, ``stack_name`` may name a Pulumi stack (``aws-dev``: its ``Pulumi.aws-dev.yaml`` says
    ``rh_iac:stack: aws``), or a stack file with ``pulumi_stack`` naming the Pulumi stack; the engine's output is
    streamed to ``on_output``, and after the RNS commit the deploy waits (at most ``ready_timeout`` seconds) until
    every cloud cluster is ready, raising :class:`~rh_iac.errors.ClusterNotReadyError` with the reason if not."""
    _check_engine(engine)
    if engine == "pulumi":
        return _deploy_pulumi(stack_name, project, pulumi_stack, on_output, ready_timeout)
    project, stack = _load(project, stack_name)
    with stack_lock(project.state_dir(stack.name), stack.name, "deploy"):
        pins, notices = apply_pins(stack, project.rns())
        engine_, target = _engine(project, stack)
        preflight(project, stack, target)
        plan = engine_.plan()
        if plan.has_changes:
            engine_.apply(plan)
        else:
            engine_.discard(plan)
        state = engine_.state() if plan.has_changes else plan.prior_state
        records = _records(stack, state, target, project.root)
        for record in records:
            if record["name"] in pins:  # still pinned: the record keeps the pin until the stack file matches it
                record["pinned"] = pins[record["name"]]
        rns = project.rns()
        _write_records(rns, stack, records)
        summary = ", ".join(f"{v} {k}" for k, v in plan.summary().items() if v)
        commit = rns.commit(f"rns: deploy stack {stack.name}" + (f" ({summary})" if summary else ""))
    return DeployResult(stack.name, plan, plan.has_changes, commit, records, notices)


def _deploy_pulumi(stack_name: str, project: Project | None, pulumi_stack: str | None,
                   on_output: Callable[[str], None] | None, ready_timeout: float) -> DeployResult:
    project, stack, engine, target = _pulumi(project, stack_name, pulumi_stack, on_output)
    with stack_lock(project.state_dir(stack.name), stack.name, "deploy"):
        pins, notices = apply_pins(stack, project.rns())
        preflight(project, stack, target)
        started = time.time()
        plan, outputs = engine.up()
        records = pulumi_records(stack, outputs, target, project.root)
        for record in records:
            if record["name"] in pins:
                record["pinned"] = pins[record["name"]]
        rns = project.rns()
        _write_records(rns, stack, records)
        summary = ", ".join(f"{v} {k}" for k, v in plan.summary().items() if v)
        commit = rns.commit(f"rns: deploy stack {stack.name} with Pulumi stack {engine.pulumi_stack}"
                            + (f" ({summary})" if summary else ""))
    from rh_iac.engines.pulumi import stack_config

    wait_for_clusters(stack, records, project.root, config=stack_config(project, engine.pulumi_stack),
                      timeout=ready_timeout, since=started, progress=on_output)
    return DeployResult(stack.name, plan, plan.has_changes, commit, records, notices)


def preview(stack_name: str = "local", project: Project | None = None, *, destroy: bool = False,
            engine: str = "terraform", pulumi_stack: str | None = None,
            on_output: Callable[[str], None] | None = None) -> Preview:
    """The plan the next deploy (or destroy) would apply, with drift, and how RNS records would change."""
    _check_engine(engine)
    if engine == "pulumi":
        project, stack, engine_, target = _pulumi(project, stack_name, pulumi_stack, on_output)
        with stack_lock(project.state_dir(stack.name), stack.name, "preview", shared=True):
            pins, notices = apply_pins(stack, project.rns()) if not destroy else ({}, [])
            if not destroy:
                preflight(project, stack, target)
            plan = engine_.preview(destroy=destroy)
            current = {} if destroy else engine_.outputs()
    else:
        project, stack = _load(project, stack_name)
        with stack_lock(project.state_dir(stack.name), stack.name, "preview", shared=True):
            pins, notices = apply_pins(stack, project.rns()) if not destroy else ({}, [])
            engine_, target = _engine(project, stack)
            if not destroy:
                preflight(project, stack, target)  # what deploy would refuse, preview refuses too
            plan = engine_.plan(destroy=destroy)
            engine_.discard(plan)
            current = {}
    from rh_iac.engines.pulumi import is_child

    rns = project.rns()
    changes: dict[str, tuple[dict | None, dict | None]] = {}
    for change in plan.changes:
        resource = stack[change.name] if change.name in stack and not is_child(change) else None
        try:
            before = rns.read(f"{LOCAL}/{change.name}")
        except RNSError:  # none yet, or hand-broken: the deploy writes it anew
            before = None
        after = None
        if resource is None:  # removed from the stack file: deploy marks its record destroyed, if the record is ours
            if before is None or before.get("stack") != stack.name:
                continue
            after = {**before, "outputs": {}, "status": "destroyed"}
        if resource is not None:
            keys = target.OUTPUTS.get(resource.kind, ())
            known = {**current.get(change.name, {}), **(change.after or {})} if change.action == "update" else \
                (change.after or {})
            after = _record(resource, stack, None if (destroy or change.action == "delete") else
                            {k: "(known after apply)" if change.unknown.get(k) or k not in known else known[k]
                             for k in keys}, keys, project.root, engine=engine)
            if destroy:
                after["status"] = "destroyed"
            elif change.name in pins:
                after["pinned"] = pins[change.name]
        if before != after:
            changes[change.name] = (before, after)
    return Preview(stack.name, plan, changes, project.root, notices)


def status(stack_name: str = "local", project: Project | None = None) -> list[ResourceStatus]:
    """Live health of every resource of the stack, asked of the resources themselves (not of recorded state)."""
    project, stack = _load(project, stack_name)
    apply_pins(stack, project.rns())  # a pinned resource is judged against the spec the deploy applied
    engine, target = _engine(project, stack)
    state = engine.state()
    rows = []
    for resource in stack:
        attributes = state.get(resource.name)
        if target.render(resource) is None:  # e.g. an Env: part of the clusters that use it
            rows.append(ResourceStatus(resource.name, resource.kind, "declared", "no infrastructure of its own"))
            continue
        if attributes is None:
            rows.append(ResourceStatus(resource.name, resource.kind, "not deployed", "run `invoke deploy`"))
            continue
        health, detail = target.health(resource, attributes, project.state_dir(stack.name))
        outputs = {k: attributes.get(k) for k in target.OUTPUTS.get(resource.kind, ()) if k != "tls"}
        rows.append(ResourceStatus(resource.name, resource.kind, health, detail, outputs))
    return rows


def destroy(stack_name: str = "local", project: Project | None = None, *, engine: str = "terraform",
            pulumi_stack: str | None = None, on_output: Callable[[str], None] | None = None) -> DeployResult:
    """Destroy every resource of the stack; RNS records each as destroyed, in one commit."""
    _check_engine(engine)
    if engine == "pulumi":
        project, stack, engine_, target = _pulumi(project, stack_name, pulumi_stack, on_output)
    else:
        project, stack = _load(project, stack_name)
    with stack_lock(project.state_dir(stack.name), stack.name, "destroy"):
        if engine == "pulumi":
            plan = engine_.destroy()
        else:
            engine_, target = _engine(project, stack)
            plan = engine_.plan(destroy=True)
            if plan.has_changes:
                engine_.apply(plan)
            else:
                engine_.discard(plan)
        cleanup = getattr(target, "cleanup", None)
        if cleanup is not None:  # what the engine no longer tracks (e.g. an autostopped cluster's folder and keys)
            cleanup(stack, project.state_dir(stack.name))
        rns = project.rns()
        records = _record_destroyed(rns, stack, engine, project.root)
        commit = rns.commit(f"rns: destroy stack {stack.name}")
    return DeployResult(stack.name, plan, plan.has_changes, commit, records)
