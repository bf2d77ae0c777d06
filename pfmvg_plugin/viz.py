"""Box overlays and contact sheets with Pillow (core: no matplotlib needed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

GT_COLOR = (46, 204, 64)  # green
PRED_COLOR = (255, 65, 54)  # red


@dataclass
class Panel:
    """One image with ground-truth and predicted boxes (pixels of ``image``) and a caption."""

    image: Image.Image
    gt_boxes: Sequence[Sequence[float]] = ()
    pred_boxes: Sequence[Sequence[float]] = ()
    caption: str = ""
    lines: list[str] = field(default_factory=list)


def draw_boxes(image: Image.Image, gt_boxes=(), pred_boxes=(), width: int | None = None) -> Image.Image:
    """A copy of ``image`` with ground truth in green and predictions in red."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width = width or max(2, round(max(out.size) / 150))
    for boxes, color in ((gt_boxes, GT_COLOR), (pred_boxes, PRED_COLOR)):
        for x1, y1, x2, y2 in boxes:
            draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
    return out


def contact_sheet(panels: Sequence[Panel], columns: int = 4, tile: int = 256, title: str = "") -> Image.Image:
    """Tile panels into one picture; each tile shows the overlay and up to three caption lines."""
    font = ImageFont.load_default()
    caption_h = 14 * 3 + 6
    title_h = 24 if title else 0
    rows = max(1, -(-len(panels) // columns))
    sheet = Image.new("RGB", (columns * tile, title_h + rows * (tile + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((6, 5), title, fill="black", font=font)
    for i, panel in enumerate(panels):
        overlay = draw_boxes(panel.image, panel.gt_boxes, panel.pred_boxes)
        scale = tile / max(overlay.size)
        overlay = overlay.resize((max(1, round(overlay.width * scale)), max(1, round(overlay.height * scale))))
        x0 = (i % columns) * tile
        y0 = title_h + (i // columns) * (tile + caption_h)
        sheet.paste(overlay, (x0 + (tile - overlay.width) // 2, y0))
        for j, line in enumerate(([panel.caption] if panel.caption else []) + list(panel.lines)[:2]):
            draw.text((x0 + 4, y0 + tile + 2 + 14 * j), _fit(line, tile, font), fill="black", font=font)
    return sheet


def _fit(text: str, width: int, font) -> str:
    while text and font.getlength(text) > width - 8:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text
