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
one_label = _task.one_label


def vqarad_test_docs(dataset):
    return _task.process_docs(dataset, "vqarad", "test")


def slake_test_docs(dataset):
    return _task.process_docs(dataset, "slake", "test")


def pathvqa_test_docs(dataset):
    return _task.process_docs(dataset, "pathvqa", "test")


def synthcxr_vqa_test_docs(dataset):
    return _task.process_docs(dataset, "synthcxr_vqa", "test")
