"""Thin glue for the report-generation task YAMLs: everything lives in pfmvg_plugin.lmms.report_task.

lmms-eval loads this file as a loose module (``!function utils.<name>``): absolute imports only.
"""

from pfmvg_plugin.lmms import report_task as _task

doc_to_text = _task.doc_to_text
doc_to_visual = _task.doc_to_visual
doc_to_target = _task.doc_to_target
process_results = _task.process_results

bleu1 = _task.bleu1
bleu2 = _task.bleu2
bleu3 = _task.bleu3
bleu4 = _task.bleu4
rouge_l = _task.rouge_l
meteor_simple = _task.meteor_simple
cider_d = _task.cider_d
generation_error_rate = _task.generation_error_rate
n_scored = _task.AGGREGATIONS["n_scored"]
image_errors = _task.AGGREGATIONS["image_errors"]
one_label = _task.one_label

# process_docs per task YAML (each also tells the data check before the run what it needs)
iuxray_test_docs = _task.docs_for("iuxray", "test")
iuxray_test_docs_50w = _task.docs_for("iuxray", "test", max_words=_task.PEFOMED_MAX_WORDS)
mimiccxr_test_docs = _task.docs_for("mimiccxr_reports", "test")
mimiccxr_test_docs_50w = _task.docs_for("mimiccxr_reports", "test", max_words=_task.PEFOMED_MAX_WORDS)
synthcxr_test_docs = _task.docs_for("synthcxr_reports", "test")
