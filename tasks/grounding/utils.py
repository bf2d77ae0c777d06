"""Thin glue for the grounding task YAMLs: everything lives in pfmvg_plugin.lmms.grounding_task.

lmms-eval loads this file as a loose module (``!function utils.<name>``): absolute imports only.
"""

from pfmvg_plugin.lmms import grounding_task as _task
from pfmvg_plugin.lmms import pointing_task as _pointing

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
n_scored = _task.n_scored
image_errors = _task.image_errors
format_ok = _task.format_ok
format_no_box = _task.format_no_box
format_wrong_format = _task.format_wrong_format
format_out_of_range = _task.format_out_of_range
one_label = _task.one_label

# process_docs per task YAML (each also tells the data check before the run what it needs)
mscxr_test_docs = _task.docs_for("mscxr", "test")
mscxr_val_docs = _task.docs_for("mscxr", "val")
chestxray8_test_docs = _task.docs_for("chestxray8", "test")
vindr_test_docs = _task.docs_for("vindr", "test")
synthcxr_test_docs = _task.docs_for("synthcxr", "test")
slake_grounding_test_docs = _task.docs_for("slake_grounding", "test")
# the uniform-protocol variants read the same data under their own task key
mscxr_uniform_docs = _task.docs_for("mscxr", "test", name="mscxr_grounding_uniform")
synthcxr_uniform_docs = _task.docs_for("synthcxr", "test", name="synthcxr_grounding_uniform")

# pointing tasks (Molmo's points, scored as points) on the same data
pointing_doc_to_text = _pointing.doc_to_text
pointing_doc_to_visual = _pointing.doc_to_visual
pointing_doc_to_target = _pointing.doc_to_target
pointing_process_results = _pointing.process_results
point_hit_rate = _pointing.point_hit_rate
pointing_parse_failure_rate = _pointing.parse_failure_rate
pointing_generation_error_rate = _pointing.generation_error_rate
synthcxr_pointing_docs = _pointing.docs_for("synthcxr", "test", name="synthcxr_pointing")
mscxr_pointing_docs = _pointing.docs_for("mscxr", "test", name="mscxr_pointing")
