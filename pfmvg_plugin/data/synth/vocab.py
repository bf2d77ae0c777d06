"""synthcxr vocabulary: finding kinds, categories, sampling weights, sides, zones and phrase templates."""


NAME = "synthcxr"
MIN_SIZE = 64

CATEGORIES = {
    "nodule": "Nodule",
    "mass": "Mass",
    "effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "cardiomegaly": "Cardiomegaly",
    "atelectasis": "Atelectasis",
}
"""Finding kind -> canonical category name written to records."""

FINDING_WEIGHTS = {
    "nodule": 0.18, "mass": 0.12, "effusion": 0.16, "pneumothorax": 0.14,
    "consolidation": 0.16, "cardiomegaly": 0.12, "atelectasis": 0.12,
}
SECOND_FINDING_P = 0.3
ZONES = ("upper", "middle", "lower")
SIDES = ("right", "left")
_BOX_THRESHOLD = 0.2  # a pixel belongs to a finding's box where its drawn alpha reaches this
_ZONE_MARGIN = 0.06  # keep box centres this share of the lung height away from zone borders

PHRASES = {
    "nodule": ("{size} nodule in the {side} {zone} zone", "{size} {side} {zone} zone nodule",
               "{size} pulmonary nodule in the {side} {zone} zone",
               "{size} nodule in the {zone} zone of the {side} lung"),
    "mass": ("{size} mass in the {side} {zone} zone", "{size} {side} {zone} zone mass",
             "{size} lobulated mass in the {zone} zone of the {side} lung",
             "{size} pulmonary mass in the {side} {zone} zone"),
    "effusion": ("{side} pleural effusion", "{size} {side} pleural effusion", "{size} {side}-sided pleural effusion",
                 "{side} pleural effusion blunting the costophrenic angle"),
    "pneumothorax": ("{size} {side} {zone} pneumothorax", "{side} {zone} pneumothorax",
                     "{size} {zone} pneumothorax on the {side}"),
    "consolidation": ("consolidation in the {side} {zone} zone", "{side} {zone} zone consolidation",
                      "patchy airspace opacity in the {side} {zone} zone",
                      "airspace consolidation in the {zone} zone of the {side} lung"),
    "cardiomegaly": ("cardiomegaly", "enlarged cardiac silhouette", "the heart is enlarged", "cardiac enlargement",
                     "enlarged heart"),
    "atelectasis": ("atelectasis in the {side} {zone} zone", "plate-like atelectasis in the {side} {zone} zone",
                    "{side} {zone} zone atelectasis", "linear atelectasis in the {zone} zone of the {side} lung"),
}
"""Phrase templates per finding; one is picked per finding from the image's generator."""
