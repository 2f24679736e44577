"""A preview as a pull-request review: Markdown ready to paste in a PR comment, and the same as versioned JSON.

``invoke preview --markdown`` prints :func:`preview_markdown`; ``invoke preview --json PATH`` (``-`` for stdout)
writes :func:`preview_json`. Both are deterministic (changes sorted by address, records by name, fields by path),
write the project folder as ``{project}`` so they read the same on every checkout, and hold no secret values: they
are built from the plan and the RNS records only, which never carry one.

The JSON shape, version 1 (``"schema": 1``; a new version is made for any change that is not a new key)::

    {
      "schema": 1,
      "stack": "local",
      "destroy": false,                       # a preview of `invoke destroy`
      "summary": {"create": 1, "update": 1, "replace": 0, "delete": 0, "drift": 1},
      "changes": [                            # what the next deploy applies, sorted by address
        {"address": "rhlocal_dask_cluster.dev-cluster", "type": "rhlocal_dask_cluster", "name": "dev-cluster",
         "action": "update",                  # create | update | replace | delete
         "attributes": {"workers": {"before": 2, "after": 1, "known_after_apply": false}}}
      ],
      "drift": [                              # what Terraform found changed outside rh_iac, same shape;
        {...}                                 # action "update" (changed) or "delete" (gone)
      ],
      "rns": [                                # RNS records the next deploy writes, sorted by name
        {"name": "dev-cluster", "change": "updated",    # new | updated | destroyed | removed
         "fields": [{"field": "spec.workers", "before": 2, "after": 1}]}   # dotted paths; null when absent
      ],
      "pins": [                               # resources deployed from a rollback pin, not the stack file
        {"resource": "dev-cluster", "version": "<commit sha>", "by": "<user>",
         "declared": {"workers": 1}, "pinned": {"workers": 2}}
      ]
    }

A value not known until apply is ``"(known after apply)"`` with ``known_after_apply: true``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rh_iac.rns.paths import portable

if TYPE_CHECKING:  # pragma: no cover
    from rh_iac.engines.terraform import Change
    from rh_iac.operations import Preview

#: version of the :func:`preview_json` document
SCHEMA_VERSION = 1
#: what a value not known until apply reads as (the engine's own wording)
UNKNOWN = "(known after apply)"

_ACTIONS = ("create", "update", "replace", "delete")
#: plain-text action symbols, Terraform's own
_SYMBOLS = {"create": "+", "update": "~", "replace": "-/+", "delete": "-"}
_MAX_VALUE = 80
_MAX_LINES = 8


# --- the machine-readable document ---------------------------------------------------------------------------------
def _portable(value: Any, root: Path | None) -> Any:
    """``value`` with every spelling of the project folder (path or ``file://`` URL) written as ``{project}``."""
    return portable(value, root, anywhere=True)


def _change(change: "Change", root: Path | None) -> dict[str, Any]:
    attributes = {
        key: {"before": before, "after": after, "known_after_apply": change.unknown.get(key) is True}
        for key, (before, after) in change.changed_attributes().items()
    }
    return _portable({"address": change.address, "type": change.type, "name": change.name, "action": change.action,
                      "attributes": attributes}, root)


def _record_change(before: dict | None, after: dict | None) -> str:
    if before is None:
        return "new"
    if after is None:
        return "removed"
    if after.get("status") == "destroyed" and before.get("status") != "destroyed":
        return "destroyed"
    return "updated"


def _rns_entry(name: str, before: dict | None, after: dict | None, root: Path | None) -> dict[str, Any]:
    from rh_iac.rns.history import field_changes

    changes = field_changes(before, after)
    changed = {c.field for c in changes}
    # an object emptied or filled ("outputs": {} -> {"url": ...}) shows as its fields, not also as the object
    fields = [{"field": c.field, "before": c.before, "after": c.after} for c in changes
              if not (c.before in (None, {}) and c.after in (None, {})
                      and any(f.startswith(c.field + ".") for f in changed))]
    return _portable({"name": name, "change": _record_change(before, after), "fields": fields}, root)


def preview_json(preview: "Preview") -> dict[str, Any]:
    """The preview as a JSON-ready dict of the documented shape above (``"schema": 1``)."""
    plan = preview.plan
    return {
        "schema": SCHEMA_VERSION,
        "stack": preview.stack,
        "destroy": plan.destroy,
        "summary": {k: plan.summary().get(k, 0) for k in (*_ACTIONS, "drift")},
        "changes": [_change(c, preview.root) for c in sorted(plan.changes, key=lambda c: c.address)],
        "drift": [_change(c, preview.root) for c in sorted(plan.drift, key=lambda c: c.address)],
        "rns": [_rns_entry(name, *preview.rns_changes[name], preview.root) for name in sorted(preview.rns_changes)],
        "pins": [_portable({"resource": n.resource, "version": n.version, "by": n.by, "declared": n.declared,
                            "pinned": n.pinned}, preview.root)
                 for n in sorted(preview.notices, key=lambda n: n.resource)],
    }


# --- Markdown --------------------------------------------------------------------------------------------------------
def _code(text: str, *, in_table: bool = True) -> str:
    """``text`` as an inline code span that survives backticks and, inside a table, pipes."""
    text = text.replace("\n", " ")
    if in_table:
        text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _value(value: Any, *, known_after_apply: bool = False, in_table: bool = True) -> str:
    if known_after_apply or value == UNKNOWN:
        return "_(known after apply)_"
    text = value if isinstance(value, str) and value else json.dumps(value, sort_keys=True, default=str)
    if len(text) > _MAX_VALUE:
        text = text[: _MAX_VALUE - 1] + "…"
    return _code(text, in_table=in_table)


def _cell(lines: list[str]) -> str:
    shown = lines[:_MAX_LINES]
    if len(lines) > _MAX_LINES:
        shown.append(f"… and {len(lines) - _MAX_LINES} more (see `--json`)")
    return "<br>".join(shown) or " "


def _attribute_lines(change: dict[str, Any]) -> list[str]:
    """What a reviewer needs per change: the new settings of a create, the differences of an update or replace."""
    attributes = change["attributes"]
    if change["action"] == "delete":
        return []
    lines = []
    for key, diff in attributes.items():
        if change["action"] == "create":
            if diff["known_after_apply"] or diff["after"] in (None, [], {}, ""):
                continue
            lines.append(f"{_code(key)} = {_value(diff['after'])}")
        else:
            lines.append(f"{_code(key)}: {_value(diff['before'])} → "
                         f"{_value(diff['after'], known_after_apply=diff['known_after_apply'])}")
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def preview_markdown(preview: "Preview") -> str:
    """The preview as Markdown for a PR comment: a heading with the stack, a summary line, drift called out, a table
    of the planned changes, and the RNS field diff in a collapsible ``<details>``. Ends with a newline."""
    doc = preview_json(preview)
    summary = doc["summary"]
    title = "destroy preview" if doc["destroy"] else "preview"
    out = [f"### rh_iac {title}: stack `{doc['stack']}`", ""]
    if doc["changes"]:
        plan_line = "**Plan:** " + ", ".join(f"{summary[k]} to {k}" for k in _ACTIONS) + "."
    else:
        plan_line = "**Plan:** no changes" + (", nothing to destroy." if doc["destroy"] else
                                               ": the infrastructure matches the stack.")
    rns_line = f" **RNS:** {_plural(len(doc['rns']), 'record')} to change." if doc["rns"] else ""
    out += [plan_line + rns_line, ""]

    if doc["drift"]:
        out += [f"> **Drift:** {_plural(len(doc['drift']), 'resource')} changed outside rh_iac since the last apply"
                + ("; the plan below is made against what was found." if doc["changes"] else "."), ""]
        out += ["| resource | found changed |", "| --- | --- |"]
        for change in doc["drift"]:
            lines = [f"{_code(k)}: {_value(d['before'])} → {_value(d['after'])}"
                     for k, d in change["attributes"].items()]
            if change["action"] == "delete":
                lines = ["gone"]
            out.append(f"| {_code(change['address'])} | {_cell(lines)} |")
        out.append("")

    for pin in doc["pins"]:
        fields = ", ".join(f"{_code(k, in_table=False)}: declared {_value(pin['declared'].get(k), in_table=False)}, "
                           f"pinned {_value(v, in_table=False)}" for k, v in sorted(pin["pinned"].items()))
        out += [f"> **Pinned by rollback:** {_code(pin['resource'], in_table=False)} is deployed from version "
                f"{_code(pin['version'][:12], in_table=False)} (by {_code(pin['by'], in_table=False)}), not from the "
                f"stack file: {fields}.", ""]

    if doc["changes"]:
        out += ["| | action | resource | changes |", "| --- | --- | --- | --- |"]
        for change in doc["changes"]:
            out.append(f"| {_code(_SYMBOLS[change['action']])} | {change['action']} | {_code(change['address'])} | "
                       f"{_cell(_attribute_lines(change))} |")
        out.append("")

    if doc["rns"]:
        kinds = {}
        for entry in doc["rns"]:
            kinds[entry["change"]] = kinds.get(entry["change"], 0) + 1
        counts = ", ".join(f"{kinds[k]} {k}" for k in ("new", "updated", "destroyed", "removed") if k in kinds)
        out += ["<details>", f"<summary>RNS records: {_plural(len(doc['rns']), 'change')} ({counts})</summary>", ""]
        for entry in doc["rns"]:
            out.append(f"**{_code(entry['name'], in_table=False)}** ({entry['change']})")
            out.append("")
            if entry["change"] != "removed":
                for field in entry["fields"]:
                    if entry["change"] == "new":
                        out.append(f"- {_code(field['field'], in_table=False)}: "
                                   f"{_value(field['after'], in_table=False)}")
                    else:
                        out.append(f"- {_code(field['field'], in_table=False)}: "
                                   f"{_value(field['before'], in_table=False)} → "
                                   f"{_value(field['after'], in_table=False)}")
                out.append("")
        out += ["</details>", ""]
    return "\n".join(out)


# --- writing them ---------------------------------------------------------------------------------------------------
def check_targets(*, markdown: bool, json_path: str | None) -> None:
    """Refuse review outputs that cannot be written, before the preview runs: both on stdout, or a missing folder.

    Raises :class:`~rh_iac.errors.ReviewOutputError` naming the option and the fix."""
    from rh_iac.errors import ReviewOutputError

    if json_path == "-" and markdown:
        raise ReviewOutputError("--markdown and --json - both write to stdout: give --json a file path "
                                "(e.g. --json preview.json), or drop one of them.")
    if json_path and json_path != "-":
        parent = Path(json_path).expanduser().parent
        if not parent.is_dir():
            raise ReviewOutputError(f"--json {json_path}: folder {parent} does not exist; create it or choose "
                                    f"another path (or '-' for stdout).")


def dumps_json(preview: "Preview") -> str:
    """:func:`preview_json` serialized: sorted keys, 2-space indent, trailing newline (stable for diffs and CI)."""
    return json.dumps(preview_json(preview), indent=2, sort_keys=True) + "\n"


def write_json(preview: "Preview", json_path: str) -> None:
    """Write :func:`dumps_json` to ``json_path``, or to stdout when it is ``-``."""
    import sys

    text = dumps_json(preview)
    if json_path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        check_targets(markdown=False, json_path=json_path)
        Path(json_path).expanduser().write_text(text, encoding="utf-8")
