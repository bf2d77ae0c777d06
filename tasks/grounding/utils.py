"""Thin glue for the grounding task YAMLs: everything lives in pfmvg_plugin.lmms.grounding_task.

lmms-eval loads this file as a loose module (``!function utils.<name>``): absolute imports only.
"""

from pfmvg_plugin.lmms import grounding_task as _task

doc_to_text = _task.doc_to_text
doc_to_visual = _task.doc_to_visual
doc_to_target = _task.doc_to_target
process_results = _task.process_results

acc_at_0_1 = _task.acc_at_0_1
acc_at_0_3 = _task.acc_at_0_3
acc_at_0_5 = _task.acc_at_0_5
miou = _task.miou
mdice = _task.mdice
parse_failure_rate = _task.parse_failure_rate
generation_error_rate = _task.generation_error_rate
one_label = _task.one_label


def mscxr_test_docs(dataset):
    return _task.process_docs(dataset, "mscxr", "test")


def mscxr_val_docs(dataset):
    return _task.process_docs(dataset, "mscxr", "val")


def chestxray8_test_docs(dataset):
    return _task.process_docs(dataset, "chestxray8", "test")


def vindr_test_docs(dataset):
    return _task.process_docs(dataset, "vindr", "test")


def synthcxr_test_docs(dataset):
    return _task.process_docs(dataset, "synthcxr", "test")
