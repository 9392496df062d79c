"""Draw predictions over the image: tinted regions, boundaries, and a legend panel beside it.

numpy + Pillow (+ OpenCV only to thicken boundaries on large images); no matplotlib. Every class is
drawn in its :func:`~ovseg.visualization.palette.class_color`, so colours mean the same thing in
every image, and the legend lists exactly the classes that appear.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ovseg.structures import Prediction
from ovseg.utils.image import ImageInput, load_image
from ovseg.visualization.palette import class_color, palette
from ovseg.visualization.segments import (
    _np,
    check_task,
    instance_masks,
    kept_instances,
    label_map,
    mask_boxes,
    segments_table,
)

_EDGE_SHADE = 0.45  # boundary colour = class colour x this (a darker outline, as detectron2 draws)
_MAX_LABEL_CHARS = 48


@dataclass(frozen=True)
class LegendEntry:
    """One legend line: a class that appears in the drawn prediction."""

    category_id: int
    label: str
    color: tuple[int, int, int]


def _edges(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels with a 4-neighbour of a different value (both sides of each edge)."""
    e = np.zeros(labels.shape, dtype=bool)
    dx = labels[:, 1:] != labels[:, :-1]
    dy = labels[1:, :] != labels[:-1, :]
    e[:, 1:] |= dx
    e[:, :-1] |= dx
    e[1:, :] |= dy
    e[:-1, :] |= dy
    return e


def _thicken(edges: np.ndarray, thickness: int) -> np.ndarray:
    if thickness <= 1:
        return edges
    kernel = np.ones((thickness, thickness), np.uint8)
    return cv2.dilate(edges.astype(np.uint8), kernel).astype(bool)


def overlay(
    image: ImageInput,
    prediction: Prediction,
    task: str,
    alpha: float = 0.5,
    score_threshold: float = 0.0,
    boundaries: bool = True,
) -> np.ndarray:
    """Tint each segment with its class colour and outline it.

    Args:
        image: the image the prediction is for: path, PIL image or (H, W, 3) uint8 RGB array.
        prediction: what ``Segmenter.predict`` returned, at the image's resolution.
        task: which output to draw: "semantic", "panoptic" or "instance".
        alpha: tint opacity in [0, 1]; pixel = (1 - alpha) * image + alpha * colour, rounded.
            Void (panoptic id 0 or an id missing from ``segments_info``) and background pixels
            (instance) keep the image's colour.
        score_threshold: instances scoring below it are not drawn (instance task only).
        boundaries: draw each segment's outline in a darker shade of its colour; roughly
            ``min(H, W) / 400`` pixels thick (at least 1 on each side of an edge).

    Returns:
        (H, W, 3) uint8 RGB, the size of the image (see :func:`visualize` for the legend).

    Raises:
        ValueError: unknown task, a task the prediction lacks, alpha outside [0, 1], or an image
            whose size differs from the prediction's.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    check_task(prediction, task)
    img = load_image(image)
    labels = label_map(prediction, task, score_threshold)
    if labels.shape != img.shape[:2]:
        raise ValueError(
            f"the image is {img.shape[0]}x{img.shape[1]} (HxW) but the {task} prediction is "
            f"{labels.shape[0]}x{labels.shape[1]}: draw the prediction over the image it was "
            "made from"
        )
    classes = _class_of_label(prediction, task, labels, score_threshold)  # (H, W), -1 = unpainted
    n_classes = len(prediction.vocabulary)
    colors = palette(n_classes).astype(np.float32)
    painted = classes >= 0
    out = img.astype(np.float32)
    out[painted] = (1.0 - alpha) * out[painted] + alpha * colors[classes[painted]]
    out = np.round(out).clip(0, 255).astype(np.uint8)
    if not boundaries:
        return out
    thickness = max(1, round(min(img.shape[:2]) / 400))
    edge_colors = np.round(colors * _EDGE_SHADE).astype(np.uint8)
    if task == "instance":
        masks = instance_masks(prediction)
        boxes = mask_boxes(masks)
        cls = _np(prediction.instances.labels).astype(np.int64).reshape(-1)
        h, w = labels.shape
        # Lowest score first, so the best instance's outline ends on top; each mask gets its own
        # outline so that overlapping instances of one class stay apart. Work inside each box
        # (grown by the thickness) rather than on the whole image.
        for i in kept_instances(prediction, score_threshold)[::-1]:
            x0, y0, x1, y1 = boxes[i]
            if x1 <= x0:
                continue
            x0, y0 = max(0, x0 - thickness), max(0, y0 - thickness)
            x1, y1 = min(w, x1 + thickness), min(h, y1 + thickness)
            m = masks[i, y0:y1, x0:x1]
            # The window extends past the mask wherever the image does, so outlines match a
            # whole-image computation.
            e = _thicken(_edges(m), thickness) & m
            window = out[y0:y1, x0:x1]
            window[e] = edge_colors[cls[i]]
    else:
        e = _thicken(_edges(labels), thickness) & painted
        out[e] = edge_colors[classes[e]]
    return out


def _class_of_label(
    prediction: Prediction, task: str, labels: np.ndarray, score_threshold: float
) -> np.ndarray:
    """Map a :func:`label_map` to per-pixel class indices; -1 where nothing is drawn."""
    if task == "semantic":
        return labels
    if task == "panoptic":
        info = prediction.segments_info or []
        ids = np.array([int(s["id"]) for s in info], dtype=np.int64)
        cats = np.array([int(s["category_id"]) for s in info], dtype=np.int64)
        lut_ids, inverse = np.unique(labels, return_inverse=True)
        lut = np.full(len(lut_ids), -1, dtype=np.int64)
        pos = {int(v): i for i, v in enumerate(ids)}
        for j, v in enumerate(lut_ids.tolist()):
            if v != 0 and v in pos:
                lut[j] = cats[pos[v]]
        return lut[inverse.reshape(labels.shape)]
    order = kept_instances(prediction, score_threshold)
    cls = _np(prediction.instances.labels).astype(np.int64).reshape(-1)
    lut = np.concatenate([[-1], cls[order]]).astype(np.int64)  # id k -> class of rank k
    return lut[labels]


def legend_entries(
    prediction: Prediction, task: str, score_threshold: float = 0.0
) -> list[LegendEntry]:
    """The classes that appear in the drawn prediction (at least one pixel), in vocabulary order.

    Args:
        prediction: what ``Segmenter.predict`` returned.
        task: "semantic", "panoptic" or "instance".
        score_threshold: as for :func:`overlay`.
    """
    rows = segments_table(prediction, task, score_threshold)
    present = sorted({r["category_id"] for r in rows if r["area"] > 0})
    names = prediction.vocabulary.names
    return [LegendEntry(c, names[c], class_color(c)) for c in present]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the fixed-size bitmap font
        return ImageFont.load_default()


def draw_legend(image: np.ndarray, entries: list[LegendEntry]) -> np.ndarray:
    """Append a white panel to the right of ``image`` listing ``entries`` (swatch + name).

    The panel never covers the image: entries flow into as many columns as the image's height
    needs, and if even one column is taller than the image, the canvas grows downwards (white).
    Text uses Pillow's default font (``ImageFont.load_default``), sized to the image.

    Args:
        image: (H, W, 3) uint8 RGB.
        entries: from :func:`legend_entries`; an empty list gives a "no segments" panel.

    Returns:
        (max(H, panel height), W + panel width, 3) uint8 RGB with ``image`` at the top left.
    """
    h, w = image.shape[:2]
    size = int(np.clip(round(h / 32), 12, 28))
    font = _font(size)
    probe = font.getbbox("Ag")
    text_h = probe[3] - probe[1]
    pad = max(3, size // 3)
    line_h = text_h + 2 * pad
    swatch = text_h + pad
    margin = pad * 2
    texts = [_shorten(e.label) for e in entries] or ["(no segments)"]
    text_w = max(font.getbbox(t)[2] for t in texts)
    col_w = swatch + pad * 2 + text_w + margin
    per_col = max(1, (h - 2 * margin) // line_h)
    ncols = -(-len(texts) // per_col)
    panel_w = margin + ncols * col_w
    panel_h = 2 * margin + min(len(texts), per_col) * line_h
    canvas = Image.new("RGB", (w + panel_w, max(h, panel_h)), (255, 255, 255))
    canvas.paste(Image.fromarray(np.ascontiguousarray(image)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, text in enumerate(texts):
        x = w + margin + (k // per_col) * col_w
        y = margin + (k % per_col) * line_h
        if entries:
            box = (
                x,
                y + (line_h - swatch) // 2,
                x + swatch - 1,
                y + (line_h - swatch) // 2 + swatch - 1,
            )
            draw.rectangle(box, fill=entries[k].color, outline=(0, 0, 0))
            tx = x + swatch + pad * 2
        else:
            tx = x
        draw.text(
            (tx, y + pad - probe[1]), text, fill=(0, 0, 0) if entries else (96, 96, 96), font=font
        )
    return np.asarray(canvas).copy()


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_LABEL_CHARS else text[: _MAX_LABEL_CHARS - 3] + "..."


def visualize(
    image: ImageInput,
    prediction: Prediction,
    task: str,
    alpha: float = 0.5,
    score_threshold: float = 0.0,
) -> np.ndarray:
    """:func:`overlay` with a legend panel of the classes found, to its right.

    Returns:
        (H', W + panel width, 3) uint8 RGB, H' >= H (see :func:`draw_legend`).
    """
    drawn = overlay(image, prediction, task, alpha=alpha, score_threshold=score_threshold)
    return draw_legend(drawn, legend_entries(prediction, task, score_threshold))
