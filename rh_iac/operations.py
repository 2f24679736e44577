"""The everyday operations on a stack — deploy, preview, status, destroy — as library calls.

``tasks.py`` only wraps these. Each one loads and validates the stack file first, so an invalid declaration fails
before the engine runs; deploy and destroy hold the stack's lock and record the outcome in RNS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rh_iac.engines.terraform import Plan, TerraformEngine
from rh_iac.errors import EngineNotAvailableError, NameTakenError, RNSError
from rh_iac.locks import stack_lock
from rh_iac.model import Resource, Stack
from rh_iac.project import Project
from rh_iac.providers import terraform_target
from rh_iac.rns.history import apply_pins
from rh_iac.rns.paths import portable
from rh_iac.rns.schema import SCHEMA_VERSION as RNS_SCHEMA_VERSION

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
            root: Path | None = None, *, provisioned: bool = True) -> dict:
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
        "engine": "terraform",
        "spec": portable(resource.spec(), root),
        "outputs": portable(values, root),
        "status": "deployed" if deployed else "not deployed",
    }


def _records(stack: Stack, state: dict[str, dict[str, Any]], target: Any, root: Path) -> list[dict]:
    return [_record(r, stack, state.get(r.name), target.OUTPUTS.get(r.kind, ()), root,
                    provisioned=target.render(r) is not None) for r in stack]


def _load(project: Project | None, stack_name: str) -> tuple[Project, Stack]:
    project = project or Project.find()
    return project, project.load_stack(stack_name)


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


def deploy(stack_name: str = "local", project: Project | None = None) -> DeployResult:
    """Plan the stack and apply the plan if it changes anything; then record every resource in RNS and commit."""
    project, stack = _load(project, stack_name)
    with stack_lock(project.state_dir(stack.name), stack.name, "deploy"):
        pins, notices = apply_pins(stack, project.rns())
        engine, target = _engine(project, stack)
        preflight(project, stack, target)
        plan = engine.plan()
        if plan.has_changes:
            engine.apply(plan)
        else:
            engine.discard(plan)
        state = engine.state() if plan.has_changes else plan.prior_state
        records = _records(stack, state, target, project.root)
        for record in records:
            if record["name"] in pins:  # still pinned: the record keeps the pin until the stack file matches it
                record["pinned"] = pins[record["name"]]
        rns = project.rns()
        for record in records:
            rns.write(record, folder=LOCAL)
        for name in rns.list(LOCAL):  # resources removed from the stack file were destroyed by this apply
            if name not in stack:
                try:
                    old = rns.read(f"{LOCAL}/{name}")
                except RNSError:
                    continue  # a hand-broken record of some other resource: not this deploy's to judge
                if old.get("stack") == stack.name and old.get("status") != "destroyed":
                    rns.write({**old, "outputs": {}, "status": "destroyed"}, folder=LOCAL)
        summary = ", ".join(f"{v} {k}" for k, v in plan.summary().items() if v)
        commit = rns.commit(f"rns: deploy stack {stack.name}" + (f" ({summary})" if summary else ""))
    return DeployResult(stack.name, plan, plan.has_changes, commit, records, notices)


def preview(stack_name: str = "local", project: Project | None = None, *, destroy: bool = False) -> Preview:
    """The plan the next deploy (or destroy) would apply, with drift, and how RNS records would change."""
    project, stack = _load(project, stack_name)
    with stack_lock(project.state_dir(stack.name), stack.name, "preview", shared=True):
        pins, notices = apply_pins(stack, project.rns()) if not destroy else ({}, [])
        engine, target = _engine(project, stack)
        if not destroy:
            preflight(project, stack, target)  # what deploy would refuse, preview refuses too
        plan = engine.plan(destroy=destroy)
        engine.discard(plan)
    rns = project.rns()
    changes: dict[str, tuple[dict | None, dict | None]] = {}
    for change in plan.changes:
        resource = stack[change.name] if change.name in stack else None
        try:
            before = rns.read(f"{LOCAL}/{change.name}")
        except LookupError:
            before = None
        after = None
        if resource is None:  # removed from the stack file: deploy marks its record destroyed, if the record is ours
            if before is None or before.get("stack") != stack.name:
                continue
            after = {**before, "outputs": {}, "status": "destroyed"}
        if resource is not None:
            after = _record(resource, stack, None if (destroy or change.action == "delete") else
                            {k: "(known after apply)" if change.unknown.get(k) else (change.after or {}).get(k)
                             for k in target.OUTPUTS.get(resource.kind, ())}, target.OUTPUTS.get(resource.kind, ()),
                            project.root)
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


def destroy(stack_name: str = "local", project: Project | None = None) -> DeployResult:
    """Destroy every resource of the stack; RNS records each as destroyed, in one commit."""
    project, stack = _load(project, stack_name)
    with stack_lock(project.state_dir(stack.name), stack.name, "destroy"):
        engine, target = _engine(project, stack)
        plan = engine.plan(destroy=True)
        if plan.has_changes:
            engine.apply(plan)
        else:
            engine.discard(plan)
        cleanup = getattr(target, "cleanup", None)
        if cleanup is not None:  # what Terraform no longer tracks (e.g. an autostopped cluster's folder and keys)
            cleanup(stack, project.state_dir(stack.name))
        rns = project.rns()
        records = []
        for resource in stack:
            try:
                owner = rns.read(f"{LOCAL}/{resource.name}").get("stack")
            except RNSError:
                owner = None
            if owner not in (None, stack.name):
                continue  # the name belongs to another stack's record: not ours to mark destroyed
            record = _record(resource, stack, None, (), project.root)
            record["status"] = "destroyed"
            records.append(record)
            rns.write(record, folder=LOCAL)
        commit = rns.commit(f"rns: destroy stack {stack.name}")
    return DeployResult(stack.name, plan, plan.has_changes, commit, records)
