"""Each rater's blinded queue: documents in file order, the models' outputs for each document in an order shuffled
with a seed made from the rater's name and the document, so the order is random per rater yet the same on every
visit and every server restart. Readers see "output A, B, ..." and never a model name (except in review mode)."""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass

from pfmvg_plugin.rate.items import Item


@dataclass(frozen=True)
class Slot:
    """One position of a rater's queue: the item and its blinded label within its document."""

    item: Item
    label: str  # "A", "B", ... (the model is hidden)
    of: int  # outputs shown for this document


def rater_queue(items: Sequence[Item], rater: str) -> list[Slot]:
    """The queue of ``rater``: documents in first-seen order, the outputs of each in a per-rater random order."""
    studies: dict[str, list[Item]] = {}
    for item in items:
        studies.setdefault(item.study, []).append(item)
    queue = []
    for study, group in studies.items():
        order = sorted(group, key=lambda i: i.model)
        random.Random(f"{rater}\x00{study}").shuffle(order)
        labels = string.ascii_uppercase
        queue.extend(Slot(item, labels[n % 26] + (str(n // 26) if n >= 26 else ""), len(order))
                     for n, item in enumerate(order))
    return queue
