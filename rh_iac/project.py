"""The project: the folder (inside a git repository) that holds ``stacks/``, ``rns/`` and the gitignored state.

Layout::

    <project>/stacks/<stack>.py        stack files (what the team declares)
    <project>/rns/<name>.json          RNS records, committed to git
    <project>/.rh_iac/<stack>/         engine state, TLS material, logs, encrypted secrets (gitignored)
"""

from __future__ import annotations

import os
import runpy
from dataclasses import dataclass
from pathlib import Path

from rh_iac.errors import StackFileError
from rh_iac.model import Stack, collect_stacks

STATE_FOLDER = ".rh_iac"


@dataclass(frozen=True)
class Project:
    root: Path

    @classmethod
    def find(cls, start: str | os.PathLike | None = None) -> "Project":
        """The project containing ``start`` (default: ``$RH_IAC_PROJECT``, else the current directory)."""
        if start is None and os.environ.get("RH_IAC_PROJECT"):
            start = os.environ["RH_IAC_PROJECT"]
            if not Path(start).is_dir():
                raise StackFileError(f"RH_IAC_PROJECT={start} is not a folder: point it at a project (a folder with "
                                     f"a stacks/ subfolder), or unset it to use the current directory.")
        here = Path(start or os.getcwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / "stacks").is_dir():
                return cls(folder)
        raise StackFileError(
            f"no rh_iac project found at or above {here}: a project is a folder with a stacks/ subfolder; "
            f"run from inside one or set RH_IAC_PROJECT."
        )

    # --- stacks ---------------------------------------------------------------------------------------------------
    def stack_file(self, name: str) -> Path:
        return self.root / "stacks" / f"{name}.py"

    def stack_names(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "stacks").glob("*.py") if not p.name.startswith("_"))

    def load_stack(self, name: str) -> Stack:
        """Run ``stacks/<name>.py`` and return the one :class:`Stack` it declares (validated)."""
        path = self.stack_file(name)
        if not path.is_file():
            known = ", ".join(self.stack_names()) or "none"
            raise StackFileError(f"stack {name!r}: no stack file {path}; known stacks: {known}.")
        with collect_stacks() as stacks:
            runpy.run_path(str(path), run_name=f"rh_iac_stack_{name}")
        if len(stacks) != 1:
            raise StackFileError(
                f"stack file {path} must declare exactly one Stack, found {len(stacks)}."
            )
        stack = stacks[0].validate()
        if stack.name != name:
            raise StackFileError(
                f"stack file {path} declares Stack({stack.name!r}); name it {name!r} to match the file name."
            )
        return stack

    # --- state ----------------------------------------------------------------------------------------------------
    @property
    def state_root(self) -> Path:
        return self.root / STATE_FOLDER

    def state_dir(self, stack: str) -> Path:
        path = self.state_root / stack
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    @property
    def plugin_dir(self) -> Path:
        return self.state_root / "plugins"

    def rns(self):
        from rh_iac.rns import GitRNS

        return GitRNS(self.root)
