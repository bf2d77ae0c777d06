"""Thin glue for the Med-VQA task YAMLs: everything lives in pfmvg_plugin.lmms.vqa_task.

lmms-eval loads this file as a loose module (``!function utils.<name>``): absolute imports only.
"""

from pfmvg_plugin.lmms import vqa_task as _task

doc_to_text = _task.doc_to_text
doc_to_visual = _task.doc_to_visual
doc_to_target = _task.doc_to_target
process_results = _task.process_results

overall_acc = _task.overall_acc
closed_acc = _task.closed_acc
open_exact_acc = _task.open_exact_acc
open_recall = _task.open_recall
generation_error_rate = _task.generation_error_rate
n_closed = _task.n_closed
n_open = _task.n_open
n_scored = _task.AGGREGATIONS["n_scored"]
image_errors = _task.AGGREGATIONS["image_errors"]
one_label = _task.one_label

# process_docs per task YAML (each also tells the data check before the run what it needs)
vqarad_test_docs = _task.docs_for("vqarad", "test")
slake_test_docs = _task.docs_for("slake", "test")
pathvqa_test_docs = _task.docs_for("pathvqa", "test")
synthcxr_vqa_test_docs = _task.docs_for("synthcxr_vqa", "test")
