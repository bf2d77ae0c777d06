"""lmms-eval task YAMLs of pfmvg_plugin, installed as the package ``pfmvg_plugin.lmms_tasks``.

Not imported by lmms-eval: it reads the YAMLs from this folder (found with ``pfmvg_plugin.lmms.hook.tasks_dir()``).
"""
