"""Zero-flag lmms-eval integration: our model manifests, and our task folder in every ``TaskManager``.

lmms-eval has no entry point for tasks (docs/ARCHITECTURE.md §4). It loads the ``lmms_eval.models`` entry points
while importing ``lmms_eval.models``, which the evaluation CLI does before it builds its ``TaskManager``.
:func:`lmms_eval_manifests` is our entry point: it returns the model manifests and, on the way, wraps
``TaskManager.initialize_tasks`` so that every task index also holds the tasks shipped in this package. Built-in
tasks and ``--include_path`` folders keep precedence on name clashes (a clash is reported once on stderr), and one
unreadable task folder of ours is skipped without breaking lmms-eval.

It also wraps ``TaskManager.match_tasks``, which the ``lmms-eval`` command calls before it loads the model: the data
of every requested pfmvg task is checked there (:mod:`.preflight`), and a run with unprepared data stops with one
block naming each dataset and its ``pfmvg data prepare`` command, before minutes of model loading.

The wrap depends on lmms-eval internals, so it is guarded: a tested version range, the signatures it relies on, and
``PFMVG_NO_TASK_HOOK=1`` to switch it off. Whenever it is not installed, one stderr line says to pass
``--include_path <tasks dir>`` instead. Nothing here raises into lmms-eval.

Print the tasks folder (for ``--include_path`` / ``lmms-eval tasks list --include-path``, which never loads model
entry points)::

    python -m pfmvg_plugin.lmms.hook

This module imports neither lmms-eval nor torch at import time.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import sys
from pathlib import Path

#: Package holding the task YAMLs (the top-level ``tasks/`` folder, mapped in pyproject.toml).
TASKS_PACKAGE = "pfmvg_plugin.lmms_tasks"
#: Set to 1 to leave lmms-eval's TaskManager alone (then pass ``--include_path``).
DISABLE_ENV = "PFMVG_NO_TASK_HOOK"
#: lmms-eval versions whose TaskManager internals the hook was checked against: ``[low, high)`` on (major, minor).
SUPPORTED_LMMS_EVAL = ((0, 7), (0, 8))
#: Our lmms-eval models: ``--model`` id -> simple class path (imported by lmms-eval only when that model is used).
MODEL_CLASSES = {
    "pfmvg_llava": "pfmvg_plugin.lmms.llava_model.PfmvgLlava",
    "pfmvg_minigptv2": "pfmvg_plugin.lmms.minigptv2_model.PfmvgMiniGPTv2",
}

_PREFIX = "pfmvg_plugin"
_MARK = "__pfmvg_task_dirs__"  # attribute on our wrapper: the list of extra task folders
_EXPECTED_PARAMS = ["self", "include_path", "include_defaults"]
_said: set[str] = set()  # stderr messages already printed by this process


def say_once(message: str) -> None:
    """One line on stderr, once per process (lmms-eval silences ``warnings`` globally)."""
    if message not in _said:
        _said.add(message)
        print(f"{_PREFIX}: {message}", file=sys.stderr)


def tasks_dir() -> Path:
    """The folder with our lmms-eval task YAMLs, in editable and wheel installs (and a plain source checkout)."""
    try:
        from importlib.resources import files

        return Path(str(files(TASKS_PACKAGE)))
    except (ImportError, TypeError):  # not installed: running from a source checkout
        return Path(__file__).resolve().parents[2] / "tasks"


def _decline(reason: str) -> None:
    say_once(f"lmms-eval task hook not installed ({reason}); "
              f"to use the pfmvg tasks pass --include_path {tasks_dir()}")


def lmms_eval_version() -> tuple[int, int] | None:
    """(major, minor) of the installed lmms-eval, or None when it is not installed or unreadable."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("lmms_eval")
    except PackageNotFoundError:
        return None
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _check_task_manager(task_manager: type) -> str | None:
    """Why the hook cannot wrap this TaskManager, or None when the internals it relies on are as expected."""
    init_tasks = getattr(task_manager, "initialize_tasks", None)
    if init_tasks is None or not callable(init_tasks):
        return "TaskManager.initialize_tasks is missing"
    params = list(inspect.signature(init_tasks).parameters)
    if params[:3] != _EXPECTED_PARAMS:
        return f"TaskManager.initialize_tasks{tuple(params)} changed signature"
    get_tasks = getattr(task_manager, "_get_task_and_group", None)
    if get_tasks is None or not callable(get_tasks):
        return "TaskManager._get_task_and_group is missing"
    if len(inspect.signature(get_tasks).parameters) != 2:
        return "TaskManager._get_task_and_group changed signature"
    return None


def _task_folders(root: str) -> list[str]:
    if not os.path.isdir(root):
        return []
    return sorted(e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith(("_", ".")))


def _given_paths(include_path) -> set[str]:
    if include_path is None:
        return set()
    paths = [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path)
    return {os.path.realpath(p) for p in paths}


def _add_task_dirs(task_manager, index: dict, include_path, extra_dirs: list[str]) -> dict:
    """``index`` plus the tasks under ``extra_dirs``; names already in ``index`` keep their entry."""
    given = _given_paths(include_path)
    for root in extra_dirs:
        if os.path.realpath(root) in given:  # the user passed our folder with --include_path: already indexed
            continue
        for folder in _task_folders(root):
            try:
                ours = task_manager._get_task_and_group(folder)
            except Exception as exc:  # one unreadable folder must not break every lmms-eval run
                say_once(f"skipping task folder {folder}: {type(exc).__name__}: {exc}")
                continue
            for name in sorted(set(ours) & set(index)):
                say_once(f"task {name!r} from {folder} is shadowed by another task of that name "
                          "(lmms-eval built-ins and --include_path win)")
            index = {**ours, **index}
    return index


def install_task_hook(path: str | os.PathLike | None = None) -> bool:
    """Make every lmms-eval ``TaskManager`` index the tasks under ``path`` (default: :func:`tasks_dir`).

    Idempotent: the wrap is applied once per process and a folder is added once. Returns True when the hook is in
    place; False (after one stderr line saying to pass ``--include_path``) when a guard declines. Raises only if
    importing lmms-eval itself fails; :func:`lmms_eval_manifests` catches that.
    """
    folder = os.path.abspath(os.fspath(path if path is not None else tasks_dir()))
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return False
    found = lmms_eval_version()
    low, high = SUPPORTED_LMMS_EVAL
    if found is None or not low <= found < high:
        shown = "not installed" if found is None else ".".join(map(str, found))
        _decline(f"lmms-eval {shown} is outside the tested range "
                 f"{'.'.join(map(str, low))} <= version < {'.'.join(map(str, high))}")
        return False

    from lmms_eval.tasks import TaskManager

    current = TaskManager.initialize_tasks
    extra_dirs = getattr(current, _MARK, None)
    if extra_dirs is None:
        problem = _check_task_manager(TaskManager)
        if problem is not None:
            _decline(problem)
            return False
        extra_dirs = []
        original = current

        @functools.wraps(original)
        def initialize_tasks(self, include_path=None, include_defaults=True, *args, **kwargs):
            index = original(self, include_path, include_defaults, *args, **kwargs)
            if not include_defaults:  # the caller asked for its include_path only
                return index
            try:
                return _add_task_dirs(self, index, include_path, extra_dirs)
            except Exception as exc:  # never break lmms-eval
                _decline(f"{type(exc).__name__}: {exc}")
                return index

        setattr(initialize_tasks, _MARK, extra_dirs)
        TaskManager.initialize_tasks = initialize_tasks
        _wrap_match_tasks(TaskManager, extra_dirs)
    if folder not in extra_dirs:
        extra_dirs.append(folder)
    return True


def _wrap_match_tasks(task_manager: type, extra_dirs: list[str]) -> None:
    """Check the data of the requested pfmvg tasks when lmms-eval resolves ``--tasks`` (before it loads the model):
    the ``lmms-eval`` command stops there with one block listing every unprepared dataset (:mod:`.preflight`)."""
    original = getattr(task_manager, "match_tasks", None)
    if original is None or not callable(original) or list(inspect.signature(original).parameters)[:2] != [
            "self", "task_list"]:
        say_once("data check before the run not installed (TaskManager.match_tasks changed)")
        return

    @functools.wraps(original)
    def match_tasks(self, task_list, *args, **kwargs):
        names = original(self, task_list, *args, **kwargs)
        if not _running_lmms_eval_cli():
            return names
        from pfmvg_plugin.lmms import preflight

        try:
            return preflight.check_requested(self, names, list(extra_dirs))
        except preflight.UnpreparedDataError as exc:
            print(exc, file=sys.stderr)
            raise SystemExit(1) from None
        except Exception as exc:  # never break lmms-eval
            say_once(f"data check before the run skipped ({type(exc).__name__}: {exc})")
            return names

    task_manager.match_tasks = match_tasks


def uninstall_task_hook() -> bool:
    """Restore lmms-eval's own ``TaskManager.initialize_tasks`` (tests). Returns whether a hook was removed."""
    from lmms_eval.tasks import TaskManager

    current = TaskManager.initialize_tasks
    if getattr(current, _MARK, None) is None:
        return False
    TaskManager.initialize_tasks = current.__wrapped__
    if hasattr(TaskManager.match_tasks, "__wrapped__"):
        TaskManager.match_tasks = TaskManager.match_tasks.__wrapped__
    return True


def model_manifests() -> list:
    """``ModelManifest`` objects for our models (class paths only: nothing heavy is imported here)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=model_id, simple_class_path=path) for model_id, path in MODEL_CLASSES.items()]


def _running_lmms_eval_cli() -> bool:
    """Whether this process is the ``lmms-eval`` command (console script or ``python -m lmms_eval``)."""
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    if spec is not None and (spec.name or "").split(".")[0] == "lmms_eval":
        return True
    return os.path.basename(sys.argv[0] if sys.argv else "") in ("lmms-eval", "lmms_eval")


def check_environment() -> bool:
    """Say (one line each) what is known broken or untested among the stacks lmms-eval runs us on.

    Returns False when a known-broken combination is installed (:data:`pfmvg_plugin.compat.KNOWN_BROKEN`).
    """
    from pfmvg_plugin import compat

    for line in compat.untested_versions(("lmms-eval", "transformers", "peft")):
        say_once(line)
    broken = compat.broken_combinations()
    for line in broken:
        say_once(line)
    return not broken


def lmms_eval_manifests() -> list:
    """Entry point of the ``lmms_eval.models`` group: install the task hook, return our model manifests.

    A known-broken environment (e.g. filelock >= 4.3 beside lmms-eval 0.7.3) stops the ``lmms-eval`` command here,
    before any model loads, with one line saying what to run; imported any other way we only say that line.
    Otherwise never raises: lmms-eval loads all plugins in one unguarded loop, so an exception here would also drop
    every plugin loaded after us.
    """
    try:
        healthy = check_environment()
    except Exception as exc:  # the check must never be what breaks lmms-eval
        say_once(f"environment check skipped ({type(exc).__name__}: {exc})")
        healthy = True
    if not healthy and _running_lmms_eval_cli():
        raise SystemExit(1)
    try:
        install_task_hook()
    except Exception as exc:
        _decline(f"{type(exc).__name__}: {exc}")
    try:
        return model_manifests()
    except Exception as exc:
        say_once(f"lmms-eval models not registered ({type(exc).__name__}: {exc})")
        return []


def main(argv: list[str] | None = None) -> int:
    """``python -m pfmvg_plugin.lmms.hook``: print the tasks folder."""
    print(tasks_dir())
    return 0


if __name__ == "__main__":
    sys.exit(main())
