"""Rendering a cloud stack under Pulumi's own mocks, and recording everything the program registered.

:func:`render_under_mocks` runs a provider's ``render`` inside ``@pulumi.runtime.test`` (so a failure inside an
``apply`` fails the test) against a :class:`pulumi.runtime.MockMonitor`, and returns every registered resource with
its inputs and its parent's type (from the URN: ``<parent type>$<type>``), every invoke, and the resolved outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pulumi
from pulumi.runtime.mocks import MockMonitor


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]
    parent_type: str | None
    custom: bool
    #: the URNs the resource waits for (its explicit depends_on, components expanded to their children)
    dependencies: list[str]


@dataclass
class Rendering:
    resources: list[Registered]
    calls: list[Any]
    outputs: dict[str, dict[str, Any]]
    monitor: MockMonitor = field(repr=False)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name: str) -> Registered:
        found = [r for r in self.resources if r.type == typ and r.name == name]
        assert len(found) == 1, f"expected one {typ} named {name}, got {[r.name for r in self.of_type(typ)]}"
        return found[0]

    def types(self) -> set[str]:
        return {r.type for r in self.resources}


def secret_input(value: Any) -> Any:
    """The plain value of an input the program marked secret; fails when it was not marked secret."""
    from pulumi.runtime import rpc

    assert isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig, (
        f"not a Pulumi secret: {str(value)[:40]}...")
    return value["value"]


class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that echo inputs back as state, plus the computed attributes ``computed(args)`` returns."""

    def __init__(self, computed: Callable[[Any], dict[str, Any]], invoke: Callable[[Any], dict[str, Any]]) -> None:
        self.computed, self.invoke = computed, invoke
        self.args: list[Any] = []
        self.calls: list[Any] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.args.append(args)
        return f"{args.name}-id", {**args.inputs, **self.computed(args)}

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append(args)
        return self.invoke(args)


class RecordingMonitor(MockMonitor):
    """A mock monitor that also keeps each registration's dependencies (MockResourceArgs does not carry them)."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.dependencies: dict[tuple[str, str], list[str]] = {}

    def RegisterResource(self, request):
        self.dependencies[(request.type, request.name)] = list(request.dependencies)
        return super().RegisterResource(request)


def render_under_mocks(render: Callable[..., dict], stack: Any, state_dir: Path, config: dict[str, Any],
                       mocks: RecordingMocks, pulumi_stack: str) -> Rendering:
    """Run ``render(stack, state_dir)`` as the program of Pulumi stack ``pulumi_stack`` with ``config`` (values
    that are not strings are given as JSON, as Pulumi passes structured config)."""
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="rh_iac", stack=pulumi_stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()})
    resolved: dict[str, dict[str, Any]] = {}

    @pulumi.runtime.test
    def program():
        outputs = render(stack, state_dir)
        return pulumi.Output.from_input(outputs).apply(resolved.update)

    try:
        program()
    finally:
        pulumi.runtime.set_all_config({})
    parents = {}
    for urn in monitor.resources:
        qualified = urn.split("::")[2].split("$")
        name = urn.split("::")[3]
        parents[(qualified[-1], name)] = qualified[-2] if len(qualified) > 1 else None
    resources = [Registered(a.typ, a.name, dict(a.inputs), parents.get((a.typ, a.name)), a.custom,
                            monitor.dependencies.get((a.typ, a.name), [])) for a in mocks.args]
    return Rendering(resources, list(mocks.calls), resolved, monitor)
