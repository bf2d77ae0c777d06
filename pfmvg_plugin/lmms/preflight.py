"""The data check before an lmms-eval run: every requested pfmvg task's dataset is prepared, or the run stops before
any model is loaded, with one block listing every dataset that is missing and the command that prepares it.

lmms-eval resolves ``--tasks`` with ``TaskManager.match_tasks`` before it loads the model (``cli_evaluate_single``);
the task hook (:mod:`pfmvg_plugin.lmms.hook`) calls :func:`check_requested` there. A task is ours when its YAML lies
in one of our task folders; its ``process_docs`` function (:func:`pfmvg_plugin.lmms.task_data.docs_function`) says
which dataset and split it reads and whether they are prepared. Groups are checked member by member.

``PFMVG_SKIP_UNPREPARED=1`` is the opt-in to run what can run: a group runs its prepared members and the others are
listed as left out. A task asked for by name whose data is missing stays an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: Set to 1 to run only the requested tasks (and group members) whose data is prepared.
SKIP_ENV = "PFMVG_SKIP_UNPREPARED"


class UnpreparedDataError(RuntimeError):
    """Requested tasks whose data is not prepared; the message lists each with its command."""


@dataclass
class Check:
    """What :func:`check_tasks` found: (task, problem) pairs, and per group of ours the members that can run."""

    missing: list[tuple[str, str]] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> its prepared members, when some are not
    direct: list[str] = field(default_factory=list)  # requested tasks (not group members) whose data is missing


def _is_ours(task_manager, name: str, folders: Sequence[str]) -> bool:
    path = task_manager.task_index.get(name, {}).get("yaml_path")
    if not isinstance(path, str):
        return False
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(folder) + os.sep) for folder in folders)


def _problem(task_manager, name: str) -> str | None:
    docs = task_manager._get_config(name).get("process_docs")
    check = getattr(docs, "pfmvg_data_problem", None)
    return check() if callable(check) else None


def _members(task_manager, name: str) -> list:
    """A group's member task names, from its YAML (the index holds -1 for groups defined in a YAML)."""
    members = task_manager._get_config(name).get("task") or []
    return [m if isinstance(m, str) else m.get("task") for m in members]


def check_tasks(task_manager, names: Iterable, folders: Sequence[str]) -> Check:
    """Check each requested name (tasks and groups; anything not ours passes untouched)."""
    result = Check()
    for name in names:
        if not isinstance(name, str) or not _is_ours(task_manager, name, folders):
            continue
        if task_manager.task_index[name].get("type") == "group":
            members = [m for m in _members(task_manager, name) if isinstance(m, str)]
            problems = [(m, _problem(task_manager, m)) for m in members]
            missing = [(m, p) for m, p in problems if p is not None]
            if missing:
                result.missing += missing
                result.groups[name] = [m for m, p in problems if p is None]
            continue
        problem = _problem(task_manager, name)
        if problem is not None:
            result.missing.append((name, problem))
            result.direct.append(name)
    return result


def _only_members(task_manager, groups: dict[str, list[str]]) -> None:
    """Make this TaskManager load each of ``groups`` with the given members only (its own ``_get_config``)."""
    get_config = task_manager._get_config

    def filtered(name):
        config = get_config(name)
        if name in groups and isinstance(config, dict):
            config = {**config, "task": [m for m in config.get("task", [])
                                         if (m if isinstance(m, str) else m.get("task")) in groups[name]]}
        return config

    task_manager._get_config = filtered


def _block(missing: list[tuple[str, str]], skipping: bool) -> str:
    lines = ["pfmvg_plugin: " + ("these tasks are left out: their data is not prepared"
                                 if skipping else "no model was loaded: these tasks have no prepared data")]
    lines += [f"  {task}: {problem}" for task, problem in missing]
    if not skipping:
        lines.append(f"  Prepare them, or set {SKIP_ENV}=1 to run only the tasks whose data exists.")
    return "\n".join(lines)


def check_requested(task_manager, names: list, folders: Sequence[str]) -> list:
    """The task names lmms-eval should run (``names`` itself). Raises :class:`UnpreparedDataError`, one block naming
    every missing dataset and its command, unless ``PFMVG_SKIP_UNPREPARED=1``: then groups run their prepared members
    only and the rest is listed on stderr. Still an error then: a task asked for by name, or a group with no member
    left."""
    found = check_tasks(task_manager, names, folders)
    if not found.missing:
        return names
    skipping = os.environ.get(SKIP_ENV, "") not in ("", "0")
    if not skipping or found.direct or not all(found.groups.values()):
        raise UnpreparedDataError(_block(found.missing, skipping=False))
    _only_members(task_manager, found.groups)
    import sys

    print(_block(found.missing, skipping=True), file=sys.stderr)
    return names
