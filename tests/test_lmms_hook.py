"""Zero-flag lmms-eval integration: the entry point, the TaskManager hook and its guards, packaging of tasks/.

Real lmms-eval, in process; one CLI run (``lmms-eval --tasks list``) checks the whole path a user takes.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")

from pfmvg_plugin.lmms import hook  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUR_TASKS = {
    "mscxr_grounding", "mscxr_grounding_val", "chestxray8_grounding", "vindr_grounding", "synthcxr_grounding",
    "slake_grounding", "mscxr_grounding_uniform", "synthcxr_grounding_uniform",
    "mscxr_pointing", "synthcxr_pointing",
    "med_grounding", "pfmvg_vqarad", "pfmvg_slake", "pfmvg_pathvqa", "synthcxr_vqa", "med_vqa", "iuxray_report",
    "iuxray_report_50w", "mimiccxr_report", "mimiccxr_report_50w", "synthcxr_report", "med_report",
}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PFMVG_NO_PROGRESS": "1"}


@pytest.fixture(scope="module")
def task_manager_cls():
    """lmms-eval's TaskManager after the entry points loaded (as in the CLI).

    For speed, the index of lmms-eval's ~2000 built-in YAMLs is computed once for this module and copied per use;
    every other folder (ours, the tests') is indexed for real each time.
    """
    import lmms_eval.models  # noqa: F401  (loads the entry points, as the CLI does)
    import lmms_eval.tasks
    from lmms_eval.tasks import TaskManager

    builtin = os.path.dirname(os.path.abspath(lmms_eval.tasks.__file__)) + "/"
    original = TaskManager._get_task_and_group
    cache: dict = {}

    def _get_task_and_group(self, task_dir):
        if task_dir != builtin:
            return original(self, task_dir)
        if task_dir not in cache:
            cache[task_dir] = original(self, task_dir)
        return copy.deepcopy(cache[task_dir])

    TaskManager._get_task_and_group = _get_task_and_group
    yield TaskManager
    TaskManager._get_task_and_group = original


@pytest.fixture
def fresh_messages():
    hook._said.clear()
    yield
    hook._said.clear()


@pytest.fixture
def unhooked(task_manager_cls, monkeypatch, fresh_messages):
    """lmms-eval's own TaskManager for the test; our hook re-installed afterwards."""
    hook.uninstall_task_hook()
    yield task_manager_cls
    monkeypatch.undo()
    hook.uninstall_task_hook()
    assert hook.install_task_hook() is True


def _extra_dirs(task_manager_cls) -> list:
    return getattr(task_manager_cls.initialize_tasks, hook._MARK)


def _task_folder(root: Path, folder: str, yamls: dict[str, str]) -> Path:
    d = root / folder
    d.mkdir(parents=True)
    for name, text in yamls.items():
        (d / name).write_text(textwrap.dedent(text))
    return root


def _index(task_manager_cls, **kwargs) -> dict:
    return task_manager_cls(verbosity="ERROR", **kwargs)._task_index


# ---- tasks dir and light import -------------------------------------------------------------------------------------
def test_tasks_dir_holds_the_task_yamls():
    root = hook.tasks_dir()
    names = {p.stem for p in root.glob("*/*.yaml")}
    assert names == OUR_TASKS
    assert (root / "grounding" / "utils.py").is_file()
    assert (root / "grounding" / "stub.jsonl").is_file()
    out = subprocess.run([sys.executable, "-m", "pfmvg_plugin.lmms.hook"], capture_output=True, text=True,
                         timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == root


def test_hook_and_task_modules_import_without_heavy_stacks():
    code = textwrap.dedent(
        """
        import sys
        import pfmvg_plugin.lmms.hook as hook, pfmvg_plugin.lmms.grounding_task
        hook.tasks_dir()
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lmms_eval", "transformers", "datasets"))
        assert not heavy, heavy
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ---- the hook ------------------------------------------------------------------------------------------------------
def test_entry_point_installed_the_hook_once(task_manager_cls):
    dirs = _extra_dirs(task_manager_cls)
    assert dirs == [str(hook.tasks_dir())]
    assert hook.install_task_hook() is True
    assert hook.install_task_hook() is True
    assert _extra_dirs(task_manager_cls) is dirs and dirs == [str(hook.tasks_dir())]
    original = task_manager_cls.initialize_tasks.__wrapped__
    assert getattr(original, hook._MARK, None) is None  # wrapped once, not a wrapper of a wrapper


def test_task_manager_indexes_our_tasks_and_keeps_builtins(task_manager_cls):
    index = _index(task_manager_cls)
    assert set(index) >= OUR_TASKS
    for name in OUR_TASKS:
        assert Path(index[name]["yaml_path"]).parent.parent == hook.tasks_dir()
    assert index["med_grounding"]["type"] == "group"
    import lmms_eval

    builtins = Path(lmms_eval.__file__).parent / "tasks"
    assert Path(index["mme"]["yaml_path"]).is_relative_to(builtins)
    assert len([n for n in index if n.startswith("refcoco")]) > 3


def test_builtins_and_include_path_win_name_clashes(task_manager_cls, tmp_path, capfd, fresh_messages):
    ours = _task_folder(tmp_path / "ours", "clash", {
        "mme_fake.yaml": "task: mme\ndataset_path: json\n",
        "unique.yaml": "task: pfmvg_test_unique_task\ndataset_path: json\n",
        "mine.yaml": "task: pfmvg_test_user_wins\ndataset_path: json\n",
    })
    user = _task_folder(tmp_path / "user", "u", {"mine.yaml": "task: pfmvg_test_user_wins\ndataset_path: json\n"})
    dirs = _extra_dirs(task_manager_cls)
    dirs.append(str(ours))
    try:
        index = _index(task_manager_cls, include_path=str(user))
    finally:
        dirs.remove(str(ours))
    assert index["pfmvg_test_unique_task"]["yaml_path"] == str(ours / "clash" / "unique.yaml")
    assert "lmms_eval" in index["mme"]["yaml_path"]  # the built-in
    assert index["pfmvg_test_user_wins"]["yaml_path"] == str(user / "u" / "mine.yaml")  # --include_path
    err = capfd.readouterr().err
    assert "'mme'" in err and "shadowed" in err


def test_include_path_still_works_and_our_dir_is_not_indexed_twice(task_manager_cls, tmp_path):
    extra = _task_folder(tmp_path, "x", {"t.yaml": "task: pfmvg_test_include_path_task\ndataset_path: json\n"})
    index = _index(task_manager_cls, include_path=[str(extra)])
    assert index["pfmvg_test_include_path_task"]["yaml_path"] == str(extra / "x" / "t.yaml")
    assert set(index) >= OUR_TASKS
    # the documented fallback: passing our own folder explicitly gives the same entries
    index2 = _index(task_manager_cls, include_path=str(hook.tasks_dir()))
    assert {n: index2[n] for n in OUR_TASKS} == {n: index[n] for n in OUR_TASKS}
    # include_defaults=False asks for include_path only: no built-ins, none of ours
    only = _index(task_manager_cls, include_path=str(extra), include_defaults=False)
    assert set(only) == {"pfmvg_test_include_path_task"}


def test_a_broken_task_folder_is_skipped_not_fatal(task_manager_cls, tmp_path, capfd, fresh_messages):
    root = _task_folder(tmp_path, "good", {"g.yaml": "task: pfmvg_test_good_task\ndataset_path: json\n"})
    _task_folder(root, "bad", {"b.yaml": "task: [unclosed\n"})
    dirs = _extra_dirs(task_manager_cls)
    dirs.append(str(root))
    try:
        index = _index(task_manager_cls)
    finally:
        dirs.remove(str(root))
    assert "pfmvg_test_good_task" in index and "mme" in index
    assert f"skipping task folder {root / 'bad'}" in capfd.readouterr().err


# ---- guards --------------------------------------------------------------------------------------------------------
def test_guard_declines_an_untested_lmms_eval_version(unhooked, monkeypatch, capfd):
    monkeypatch.setattr(hook, "lmms_eval_version", lambda: (0, 9))
    assert hook.install_task_hook() is False
    assert getattr(unhooked.initialize_tasks, hook._MARK, None) is None
    manifests = hook.lmms_eval_manifests()  # the entry point still registers the models, never raises
    assert [m.model_id for m in manifests] == list(hook.MODEL_CLASSES)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, once
    assert "lmms-eval 0.9 is outside the tested range" in err[0]
    assert f"--include_path {hook.tasks_dir()}" in err[0]
    assert not OUR_TASKS & set(_index(unhooked))


def test_guard_declines_a_changed_signature(unhooked, monkeypatch, capfd):
    def initialize_tasks(self, paths=None):  # what a refactor upstream might look like
        return {}

    monkeypatch.setattr(unhooked, "initialize_tasks", initialize_tasks)
    assert hook.install_task_hook() is False
    assert unhooked.initialize_tasks is initialize_tasks
    err = capfd.readouterr().err
    assert "changed signature" in err and "--include_path" in err


def test_guard_declines_when_internals_are_missing(unhooked, monkeypatch, capfd):
    monkeypatch.delattr(unhooked, "_get_task_and_group")
    assert hook.install_task_hook() is False
    assert "_get_task_and_group is missing" in capfd.readouterr().err


def test_env_var_disables_the_hook(unhooked, monkeypatch, capfd):
    monkeypatch.setenv(hook.DISABLE_ENV, "1")
    assert hook.install_task_hook() is False
    assert getattr(unhooked.initialize_tasks, hook._MARK, None) is None
    assert capfd.readouterr().err == ""  # asked for: no message


def test_entry_point_never_raises(monkeypatch, capfd, fresh_messages):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated breakage")

    monkeypatch.setattr(hook, "install_task_hook", boom)
    assert [m.model_id for m in hook.lmms_eval_manifests()] == list(hook.MODEL_CLASSES)
    monkeypatch.setattr(hook, "model_manifests", boom)
    assert hook.lmms_eval_manifests() == []
    err = capfd.readouterr().err
    assert "RuntimeError: simulated breakage" in err and "--include_path" in err


def test_manifest_is_registered_lazily(task_manager_cls):
    from lmms_eval.models import MODEL_REGISTRY_V2

    manifest = MODEL_REGISTRY_V2.get_manifest("pfmvg_llava")
    assert manifest.simple_class_path == "pfmvg_plugin.lmms.llava_model.PfmvgLlava"
    assert manifest.chat_class_path is None


# ---- packaging -----------------------------------------------------------------------------------------------------
def test_pyproject_packages_cover_every_package():
    tomllib = pytest.importorskip("tomllib")
    from setuptools import find_packages

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    tool = config["tool"]["setuptools"]
    listed = set(tool["packages"])
    missing = set(find_packages(str(REPO), include=["pfmvg_plugin*"])) - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert tool["package-dir"][hook.TASKS_PACKAGE] == "tasks" and hook.TASKS_PACKAGE in listed
    eps = config["project"]["entry-points"]["lmms_eval.models"]
    assert eps == {"pfmvg": "pfmvg_plugin.lmms.hook:lmms_eval_manifests"}


def test_wheel_ships_the_tasks_and_the_entry_point(built_wheel):
    wheel = built_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    task_files = {f"pfmvg_plugin/lmms_tasks/{p.relative_to(REPO / 'tasks')}" for p in (REPO / "tasks").rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts}
    assert task_files and task_files <= names, sorted(task_files - names)
    recipe_files = {f"pfmvg_plugin/recipes/{p.relative_to(REPO / 'recipes')}" for p in (REPO / "recipes").rglob("*")
                    if p.suffix in (".yaml", ".json")}
    assert recipe_files and recipe_files <= names, sorted(recipe_files - names)
    code = {f"pfmvg_plugin/{p.relative_to(REPO / 'pfmvg_plugin')}" for p in (REPO / "pfmvg_plugin").rglob("*.py")
            if "__pycache__" not in p.parts and (p.parent / "__init__.py").is_file()}
    assert code <= names, sorted(code - names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[lmms_eval.models]" in text and "pfmvg = pfmvg_plugin.lmms.hook:lmms_eval_manifests" in text


# ---- the real CLI ----------------------------------------------------------------------------------------------------
def _lmms_eval_script() -> str:
    script = Path(sys.executable).parent / "lmms-eval"
    if not script.exists():
        pytest.skip("lmms-eval console script not installed")
    return str(script)


def test_cli_lists_our_tasks_without_include_path(tmp_path):
    env = {**os.environ, **OFFLINE}
    env.pop(hook.DISABLE_ENV, None)
    start = time.monotonic()
    out = subprocess.run([_lmms_eval_script(), "--tasks", "list"], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    listed = {line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- ")}
    assert listed >= OUR_TASKS, sorted(OUR_TASKS - listed)
    assert {"mme", "refcoco_grounding_test"} <= listed  # built-ins still there
    assert "task hook not installed" not in text
    assert time.monotonic() - start < 240
