"""The Pulumi engine: the same stack files run as Pulumi programs, driven by the Automation API.

One function, :func:`program`, is the Pulumi program of every rh_iac stack: ``pulumi up -s <stack>`` reaches it
through ``pulumi_program/__main__.py`` and ``invoke deploy --engine pulumi`` through :class:`PulumiEngine`'s inline
program, so both read the same ``Pulumi.yaml`` / ``Pulumi.<stack>.yaml`` at the project root. The Pulumi stack
selects the stack file: config ``rh_iac:stack`` when set, else the Pulumi stack's own name.

State lives in a file backend inside the project's gitignored state folder (unless ``PULUMI_BACKEND_URL`` is set),
encrypted with a passphrase from ``PULUMI_CONFIG_PASSPHRASE(_FILE)`` or one generated once and kept 0600 beside it.
The Pulumi CLI is a separate binary: without one, :func:`find_cli` says how to install it and what the fallback is.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from rh_iac.engines.terraform import Change, Plan
from rh_iac.errors import DeployError, EngineNotAvailableError, StackFileError
from rh_iac.project import Project

#: the Pulumi project name; stack config keys are namespaced ``rh_iac:`` whatever the project calls itself
PROJECT_NAME = "rh_iac"
#: the config key that names the stack file (stacks/<value>.py) a Pulumi stack deploys
STACK_KEY = "stack"
PASSPHRASE_FILE = "pulumi-passphrase"
INSTALL_HINT = "curl -fsSL https://get.pulumi.com | sh"
#: the value Pulumi's engine events carry for a property not known until apply
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
_ACTIONS = {"create": "create", "update": "update", "replace": "replace", "delete": "delete",
            "create-replacement": "replace", "import": "create"}


# --- the CLI -------------------------------------------------------------------------------------------------------
def find_cli(environ: Mapping[str, str] | None = None) -> Path:
    """The ``pulumi`` executable: on PATH, else in ``$PULUMI_HOME/bin`` or ``~/.pulumi/bin`` (where the installer
    puts it). Raises :class:`EngineNotAvailableError` naming the install command and the Terraform fallback."""
    env = os.environ if environ is None else environ
    found = shutil.which("pulumi", path=env.get("PATH", ""))
    if found:
        return Path(found)
    homes = [env["PULUMI_HOME"]] if env.get("PULUMI_HOME") else []
    homes.append(str(Path(env.get("HOME") or Path.home()) / ".pulumi"))
    for home in homes:
        candidate = Path(home) / "bin" / "pulumi"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EngineNotAvailableError(
        f"the Pulumi engine needs the pulumi CLI, and none was found on PATH nor in {' or '.join(homes)}/bin. "
        f"Install it with `{INSTALL_HINT}` (see https://www.pulumi.com/docs/install/) and open a new shell. "
        f"Without it, the Terraform engine deploys provider 'local' (`invoke deploy --stack local`); the cloud "
        f"providers (aws, gcp) need Pulumi."
    )


# --- which stack file a Pulumi stack deploys -------------------------------------------------------------------------
def stack_settings_file(project: Project, pulumi_stack: str) -> Path:
    return project.root / f"Pulumi.{pulumi_stack.split('/')[-1]}.yaml"


def stack_config(project: Project, pulumi_stack: str) -> dict[str, Any]:
    """The ``config`` of ``Pulumi.<pulumi_stack>.yaml``, read without the CLI (``{}`` if there is no such file);
    long-form entries (``key: {value: ...}``) are unwrapped, secure ones left out."""
    import yaml

    path = stack_settings_file(project, pulumi_stack)
    if not path.is_file():
        return {}
    try:
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    except (yaml.YAMLError, AttributeError) as exc:
        raise StackFileError(f"{path} is not a valid Pulumi stack settings file: {exc}; fix its YAML.") from None
    plain = {}
    for key, value in config.items():
        if isinstance(value, dict) and "secure" in value:
            continue
        plain[key] = value.get("value") if isinstance(value, dict) and "value" in value else value
    return plain


def configured_stack_file(project: Project, pulumi_stack: str) -> str | None:
    """``rh_iac:stack`` from ``Pulumi.<pulumi_stack>.yaml`` (None if unset or no file)."""
    value = stack_config(project, pulumi_stack).get(f"{PROJECT_NAME}:{STACK_KEY}")
    if value is not None and not isinstance(value, str):
        raise StackFileError(f"{stack_settings_file(project, pulumi_stack)}: config {PROJECT_NAME}:{STACK_KEY} must "
                             f"be a stack file name, got {value!r}.")
    return value


def select_stack_file(project: Project, pulumi_stack: str, configured: str | None) -> str:
    """The stack file (its name under stacks/) the Pulumi stack ``pulumi_stack`` deploys: ``configured`` (config
    ``rh_iac:stack``) when set, else the Pulumi stack's name. Unknown -> :class:`StackFileError` listing the stacks."""
    name = configured or pulumi_stack.split("/")[-1]
    if not project.stack_file(name).is_file():
        known = ", ".join(project.stack_names()) or "none"
        source = (f"config {PROJECT_NAME}:{STACK_KEY}={configured!r} of Pulumi stack {pulumi_stack!r}" if configured
                  else f"Pulumi stack {pulumi_stack!r}")
        raise StackFileError(
            f"{source} selects stack file {project.stack_file(name)}, which does not exist; known stacks: {known}. "
            f"Set {PROJECT_NAME}:{STACK_KEY} in {stack_settings_file(project, pulumi_stack).name} to one of them."
        )
    return name


def resolve(project: Project, stack_name: str, pulumi_stack: str | None = None) -> tuple[str, str]:
    """``(stack file name, Pulumi stack name)`` for ``invoke deploy --engine pulumi --stack <stack_name>``.

    ``stack_name`` may be a Pulumi stack (``aws-dev``, whose settings say ``rh_iac:stack: aws``) or a stack file;
    ``pulumi_stack`` names the Pulumi stack explicitly, and its config must then agree with ``stack_name``."""
    if pulumi_stack is None:
        return select_stack_file(project, stack_name, configured_stack_file(project, stack_name)), stack_name
    configured = configured_stack_file(project, pulumi_stack)
    if configured is not None and configured != stack_name:
        raise StackFileError(
            f"Pulumi stack {pulumi_stack!r} deploys stack file {configured!r} (config {PROJECT_NAME}:{STACK_KEY} in "
            f"{stack_settings_file(project, pulumi_stack).name}), not {stack_name!r}; pass --stack {configured}."
        )
    return select_stack_file(project, pulumi_stack, stack_name), pulumi_stack


# --- the program -------------------------------------------------------------------------------------------------
def program(project: Project, stack_file: str) -> dict[str, dict[str, Any]]:
    """The Pulumi program of stack file ``stack_file``: validate it, apply its rollback pins, render it with its
    provider's Pulumi target, and export each resource's outputs under the resource's name. Returns what it
    exported."""
    import pulumi

    from rh_iac.providers import pulumi_target
    from rh_iac.rns.history import apply_pins

    stack = project.load_stack(stack_file)
    apply_pins(stack, project.rns())  # a rollback pin holds here too: `pulumi up -s` deploys what invoke would
    outputs = pulumi_target(stack.provider).render(stack, project.state_dir(stack.name))
    for name, values in outputs.items():
        pulumi.export(name, values)
    return outputs


def main() -> dict[str, dict[str, Any]]:
    """What ``pulumi_program/__main__.py`` runs: the stack file the selected Pulumi stack names, in this project."""
    import pulumi

    project = Project.find()
    pulumi_stack = pulumi.get_stack()
    configured = pulumi.Config(PROJECT_NAME).get(STACK_KEY)
    return program(project, select_stack_file(project, pulumi_stack, configured))


# --- state and secrets ---------------------------------------------------------------------------------------------
def _passphrase_file(state_dir: Path) -> Path:
    """A random passphrase, made once and kept 0600 in the (gitignored) state folder."""
    path = state_dir / PASSPHRASE_FILE
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # a concurrent first deploy made it
            return path
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path


def engine_environment(project: Project, stack_file: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the Pulumi CLI runs with for ``stack_file``: its file backend under ``.rh_iac/<stack>/pulumi``
    (unless ``PULUMI_BACKEND_URL`` is set), its passphrase (``PULUMI_CONFIG_PASSPHRASE(_FILE)``, else a generated
    one), and the Python and import path the dynamic providers' process needs to find rh_iac and the project."""
    env = os.environ if environ is None else environ
    state_dir = project.state_dir(stack_file)
    out = {"PULUMI_SKIP_UPDATE_CHECK": "true", "RH_IAC_PROJECT": str(project.root)}
    if not env.get("PULUMI_BACKEND_URL"):
        backend = state_dir / "pulumi"
        backend.mkdir(mode=0o700, exist_ok=True)
        out["PULUMI_BACKEND_URL"] = backend.as_uri()
    if not env.get("PULUMI_CONFIG_PASSPHRASE") and not env.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        out["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(_passphrase_file(state_dir))
    if not env.get("PULUMI_PYTHON_CMD"):  # the program's and the dynamic providers' Python: this one, with rh_iac
        out["PULUMI_PYTHON_CMD"] = sys.executable
    package_root = str(Path(__file__).resolve().parents[2])
    paths = [str(project.root), package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    out["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return out


# --- what the engine did, as Terraform-shaped changes -----------------------------------------------------------------
def _resource_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _qualified_type(urn: str, type_: str) -> str:
    """The URN's type chain, ``parent-type$type`` for a component's child (its parents' types first)."""
    parts = urn.split("::")
    return parts[2] if len(parts) >= 4 else type_


def is_child(change: Change) -> bool:
    """True for a resource a component created under it (not itself a declared rh_iac resource)."""
    return "$" in change.type


def _skipped(type_: str) -> bool:
    return type_ == "pulumi:pulumi:Stack" or type_.startswith("pulumi:providers:")


def _state(meta: Any) -> dict[str, Any] | None:
    if meta is None:
        return None
    values = {**(meta.inputs or {}), **(meta.outputs or {})}
    values.pop("__provider", None)
    return values


def _change(metadata: Any, action: str) -> Change:
    before, after = _state(metadata.old), _state(metadata.new)
    unknown = {k: True for k, v in (after or {}).items() if v == UNKNOWN}
    after = {k: v for k, v in (after or {}).items() if k not in unknown} if after is not None else None
    name, type_ = _resource_name(metadata.urn), _qualified_type(metadata.urn, metadata.type)
    return Change(f"{type_}::{name}", name, type_, [action] if action != "replace"
                  else ["delete", "create"], before if action != "create" else None,
                  after if action != "delete" else None, unknown)


def changes_from_events(events: Iterable[Any]) -> list[Change]:
    """The resource changes in a stream of Automation API engine events (``ResourcePreEvent``s), one per URN."""
    found: dict[str, Change] = {}
    for event in events:
        pre = getattr(event, "resource_pre_event", None)
        if pre is None or _skipped(pre.metadata.type):
            continue
        op = str(getattr(pre.metadata.op, "value", pre.metadata.op))
        if op in _ACTIONS and pre.metadata.urn not in found:
            found[pre.metadata.urn] = _change(pre.metadata, _ACTIONS[op])
    return list(found.values())


def drift_from_events(events: Iterable[Any]) -> list[Change]:
    """What a refresh found changed outside rh_iac: resources whose read state differs from the recorded one, or that
    are gone (``ResOutputsEvent``s of ``refresh`` steps)."""
    drift = []
    for event in events:
        done = getattr(event, "res_outputs_event", None)
        if done is None or _skipped(done.metadata.type):
            continue
        meta = done.metadata
        if str(getattr(meta.op, "value", meta.op)) != "refresh":
            continue
        before, after = _state(meta.old), _state(meta.new)
        if after is None:  # read found nothing: deleted outside rh_iac
            drift.append(_change(meta, "delete"))
        elif meta.diffs or before != after:
            drift.append(_change(meta, "update"))
    return drift


def plain_outputs(outputs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Stack outputs (``OutputValue``s, as the Automation API returns them) as ``{resource: {key: value}}``. A secret
    output never leaves Pulumi's encrypted state: it is dropped here."""
    plain: dict[str, dict[str, Any]] = {}
    for name, output in outputs.items():
        value, secret = getattr(output, "value", output), getattr(output, "secret", False)
        if secret or not isinstance(value, dict):
            continue
        plain[name] = {k: v for k, v in value.items() if v != "[secret]"}
    return plain


# --- the engine --------------------------------------------------------------------------------------------------
class PulumiEngine:
    """Preview, deploy (``up``), refresh and destroy one Pulumi stack of a project through the Automation API.

    Each operation streams the engine's output to ``on_output`` and returns a :class:`Plan` whose changes and drift
    read like the Terraform engine's, so the same rendering shows both."""

    def __init__(self, project: Project, stack_file: str, pulumi_stack: str, *,
                 on_output: Callable[[str], None] | None = None) -> None:
        self.cli = find_cli()  # before anything else: no state, no files, if the engine cannot run
        self.project, self.stack_file, self.pulumi_stack = project, stack_file, pulumi_stack
        self.on_output = on_output or (lambda line: print(line, file=sys.stderr))
        self.env = engine_environment(project, stack_file)
        self.state_dir = project.state_dir(stack_file)
        self._stack: Any = None

    def _workspace_stack(self) -> Any:
        if self._stack is None:
            from pulumi import automation as auto

            root = str(self.cli.parent.parent) if self.cli.parent.name == "bin" else None
            command = auto.PulumiCommand(root=root, skip_version_check=True)
            settings = None
            if not any((self.project.root / f"Pulumi{ext}").is_file() for ext in (".yaml", ".yml", ".json")):
                settings = auto.ProjectSettings(name=PROJECT_NAME, runtime="python", main="pulumi_program/")
            options = auto.LocalWorkspaceOptions(work_dir=str(self.project.root), env_vars=self.env,
                                                 secrets_provider="passphrase", project_settings=settings,
                                                 pulumi_command=command)
            try:
                self._stack = auto.create_or_select_stack(
                    self.pulumi_stack, project_name=PROJECT_NAME,
                    program=lambda: program(self.project, self.stack_file), opts=options)
            except auto.CommandError as exc:
                raise DeployError(f"Pulumi stack {self.pulumi_stack!r}: cannot create or select it: {exc}") from None
        return self._stack

    def _run(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> tuple[Any, list[Any]]:
        from pulumi import automation as auto

        events: list[Any] = []
        try:
            result = fn(on_output=self.on_output, on_event=events.append, **kwargs)
        except auto.ConcurrentUpdateError as exc:
            raise DeployError(f"Pulumi stack {self.pulumi_stack!r} is being updated by another process: "
                              f"{exc}") from None
        except auto.CommandError as exc:
            raise DeployError(f"Pulumi {what} of stack {self.pulumi_stack!r} failed (output above): {exc}") from None
        return result, events

    def preview(self, *, destroy: bool = False) -> Plan:
        """What the next ``up`` (or destroy) would do, after a refresh whose differences are reported as drift."""
        stack = self._workspace_stack()
        _, refreshed = self._run("refresh preview", stack.preview_refresh)
        drift = drift_from_events(refreshed)
        if destroy:
            _, events = self._run("destroy preview", stack.preview_destroy)
        else:
            _, events = self._run("preview", stack.preview, refresh=True)
        return Plan(Path(self.env.get("PULUMI_BACKEND_URL", "")), changes_from_events(events), drift, destroy)

    def up(self) -> tuple[Plan, dict[str, dict[str, Any]]]:
        """Refresh, then converge the stack; returns what changed and the stack outputs."""
        result, events = self._run("up", self._workspace_stack().up, refresh=True)
        plan = Plan(Path(self.env.get("PULUMI_BACKEND_URL", "")), changes_from_events(events),
                    drift_from_events(events))
        return plan, plain_outputs(result.outputs)

    def outputs(self) -> dict[str, dict[str, Any]]:
        """The stack outputs of the last ``up`` (empty before the first)."""
        return plain_outputs(self._workspace_stack().outputs())

    def destroy(self) -> Plan:
        """Destroy every resource of the stack (refreshing first, so what is already gone is not an error)."""
        _, events = self._run("destroy", self._workspace_stack().destroy, refresh=True)
        return Plan(Path(self.env.get("PULUMI_BACKEND_URL", "")), changes_from_events(events), [], True)
