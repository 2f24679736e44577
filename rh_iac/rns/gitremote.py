"""Share RNS commits through a git remote: push without ever forcing, pull only what touches ``rns/``.

- :func:`push` pushes the current branch; a remote that has moved on (not a fast-forward) is a
  :class:`~rh_iac.errors.GitRemoteConflictError` telling you to pull first; nothing is forced.
- :func:`pull` fetches the remote branch and merges it only if every change since the common ancestor is under
  ``rns/``; otherwise it refuses (naming the other paths) so an RNS pull never brings in code you have not reviewed.
"""

from __future__ import annotations

import os

import git

from rh_iac.errors import GitRemoteConflictError, RemoteStoreError


def _repo(root: str | os.PathLike[str]) -> git.Repo:
    try:
        return git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise RemoteStoreError(f"{root} is not inside a git repository: run `git init` there.") from exc


def _branch(repo: git.Repo, branch: str | None) -> str:
    if branch:
        return branch
    if repo.head.is_detached:
        raise RemoteStoreError("HEAD is detached: check out the branch whose RNS commits you want to share.")
    return repo.active_branch.name


def _fetch(repo: git.Repo, remote: str, branch: str) -> str | None:
    """Fetch ``branch`` from ``remote``; the fetched commit, or None if the remote has no such branch."""
    if remote not in [r.name for r in repo.remotes]:
        raise RemoteStoreError(f"no git remote {remote!r} (known: {', '.join(r.name for r in repo.remotes) or 'none'});"
                               f" add it with `git remote add {remote} <url>`.")
    try:
        repo.git.fetch(remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}")
    except git.GitCommandError as exc:
        if "couldn't find remote ref" in (exc.stderr or ""):
            return None
        raise RemoteStoreError(f"git fetch {remote} {branch} failed: {(exc.stderr or str(exc)).strip()}") from exc
    return repo.git.rev_parse(f"refs/remotes/{remote}/{branch}")


def push(root: str | os.PathLike[str], remote: str = "origin", branch: str | None = None) -> str:
    """Push the branch's commits (RNS records included) to ``remote``; a non-fast-forward is a conflict error."""
    repo = _repo(root)
    branch = _branch(repo, branch)
    theirs = _fetch(repo, remote, branch)
    head = repo.head.commit.hexsha
    if theirs is not None and not repo.is_ancestor(theirs, head):
        raise GitRemoteConflictError(
            f"{remote}/{branch} has commits this checkout lacks (it is at {theirs[:12]}): pushing would overwrite "
            f"them. Run `invoke rns.pull {remote}` to merge them, then push again (rh_iac never force-pushes).",
            address=f"{remote}/{branch}")
    try:
        repo.git.push(remote, f"{head}:refs/heads/{branch}")
    except git.GitCommandError as exc:  # someone pushed between our fetch and push
        raise GitRemoteConflictError(
            f"{remote} refused the push of {branch} ({(exc.stderr or str(exc)).strip()}); pull and push again.",
            address=f"{remote}/{branch}") from exc
    return f"pushed {branch} ({head[:12]}) to {remote}"


def pull(root: str | os.PathLike[str], remote: str = "origin", branch: str | None = None,
         rns_dir: str = "rns") -> str:
    """Merge ``remote``'s branch if everything it changed since the common ancestor is under ``rns_dir``."""
    repo = _repo(root)
    branch = _branch(repo, branch)
    theirs = _fetch(repo, remote, branch)
    if theirs is None:
        return f"{remote} has no branch {branch}: nothing to pull"
    head = repo.head.commit.hexsha
    if repo.is_ancestor(theirs, head):
        return f"up to date with {remote}/{branch}"
    base = repo.git.merge_base(head, theirs)
    changed = [p for p in repo.git.diff("--name-only", base, theirs).splitlines() if p]
    outside = [p for p in changed if not p.startswith(rns_dir.rstrip("/") + "/")]
    if outside:
        shown = ", ".join(outside[:10]) + (f" and {len(outside) - 10} more" if len(outside) > 10 else "")
        raise GitRemoteConflictError(
            f"{remote}/{branch} also changes paths outside {rns_dir}/ ({shown}); an RNS pull merges RNS records "
            f"only. Review and merge that branch with git (`git pull {remote} {branch}`) instead.",
            address=f"{remote}/{branch}")
    try:
        repo.git.merge("--no-edit", "-m", f"rns: merge {remote}/{branch}", theirs)
    except git.GitCommandError as exc:
        conflicted = repo.git.diff("--name-only", "--diff-filter=U").split()
        try:
            repo.git.merge("--abort")
        except git.GitCommandError:
            pass
        detail = ", ".join(conflicted) or (exc.stderr or exc.stdout or str(exc)).strip()
        raise GitRemoteConflictError(
            f"merging {remote}/{branch} into {branch} conflicts in {rns_dir}/ ({detail}); nothing was changed. "
            f"Make the records agree (edit and commit them), then pull again.",
            address=f"{remote}/{branch}") from exc
    return f"merged {len(changed)} RNS change(s) from {remote}/{branch}"
