"""Generate synthcxr, the synthetic chest-radiograph grounding dataset (procedural PA images, boxed findings, phrases).

Every image is a procedural posteroanterior chest radiograph: body, two lung fields with vessel markings, mediastinum
and heart (to the image right), diaphragm domes, posterior ribs, clavicles, film grain and a random exposure. One
finding is drawn (a second one on some images): nodule, mass, pleural effusion, pneumothorax, consolidation,
cardiomegaly or atelectasis, each with the box that bounds what was drawn and a phrase naming finding, side, zone, size.

Left and right are the PATIENT's (radiological convention): the patient's right lung is on the IMAGE LEFT. Zones are
thirds of the lung's height. Output is deterministic: image ``i`` depends only on ``(seed, i)``, so any number of
``--workers`` writes byte-identical files.

``synthcxr_vqa`` (:mod:`pfmvg_plugin.data.synth.vqa`, ``pfmvg data synth-vqa`` or ``pfmvg data synth --vqa``) asks
closed and open Med-VQA questions about the same images, answered from their ground truth, split by split.
"""

from pfmvg_plugin.data.synth.dataset import add_arguments, assign_splits, generate_synthcxr, records_for, run_cli
from pfmvg_plugin.data.synth.findings import Finding, phrase_for
from pfmvg_plugin.data.synth.render import image_rng, render_case
from pfmvg_plugin.data.synth.vocab import CATEGORIES, MIN_SIZE, NAME, PHRASES, SIDES, ZONES
from pfmvg_plugin.data.synth.vqa import (
    ensure_synthcxr_vqa,
    generate_synthcxr_reports,
    generate_synthcxr_vqa,
    report_records,
    vqa_records,
)

__all__ = [
    "CATEGORIES", "MIN_SIZE", "NAME", "PHRASES", "SIDES", "ZONES", "Finding", "add_arguments", "assign_splits",
    "generate_synthcxr", "image_rng", "phrase_for", "records_for", "render_case", "run_cli",
    "ensure_synthcxr_vqa", "generate_synthcxr_reports", "generate_synthcxr_vqa", "report_records", "vqa_records",
]
