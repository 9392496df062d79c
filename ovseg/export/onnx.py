"""ONNX export of a ``Segmenter``: the tensor seam and the CLIP text tower, plus metadata.

    from ovseg import Segmenter
    from ovseg.export import export_onnx
    seg = Segmenter.from_pretrained("fcclip_tiny_a.pth", config="configs/tests/fcclip_tiny.yaml")
    export_onnx(seg, "exported/", sizes=[(320, 224)])
    Segmenter.from_pretrained("exported/").predict("image.png", "cat; dog", task="panoptic")

The image graph is :meth:`FCCLIP.predict_logits`. The text classifier, the synonym index and
the seen mask are graph inputs: any vocabulary runs without re-export; the number of synonyms
and of classes are dynamic axes. Two ways to write it:

- fixed sizes (default): traced by the TorchScript exporter (``dynamo=False``; deformable
  attention is ``GridSample``, the synonym max ``ScatterElements(reduction="max")``, so opset
  >= 18). Tracing bakes the padded height and width into the graph, so one graph is written per
  requested padded size and the runtime refuses other sizes with a message.
- ``dynamic=True``: one graph whose padded height and width are dynamic (any multiples of the
  size divisibility up to ``max_side``), written by the ``torch.export``-based exporter
  (``dynamo=True``, needs ``onnxscript``). Slower to export, one file for every size.

The batch is 1 in both. The text graph takes a fixed block of prompts padded to the context.
The layout is described in :mod:`ovseg.inference.onnx_backend`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import ovseg
from ovseg.config import to_yaml
from ovseg.inference.onnx_backend import (
    DYNAMIC_GRAPH,
    FORMAT,
    FORMAT_VERSION,
    METADATA_FILE,
    TEXT_GRAPH,
    image_graph_name,
)
from ovseg.inference.segmenter import Segmenter
from ovseg.models.oneformer import TASK_NAMES
from ovseg.models.ops.ms_deform_attn import grid_sample_for_export
from ovseg.text.templates import resolve_templates
from ovseg.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

MIN_OPSET = 18  # ScatterElements with reduction="max" (the synonym max)
IMAGE_INPUTS = ["images", "text_classifier", "synonym_index", "seen_mask"]
IMAGE_OUTPUTS = ["mask_cls", "mask_logits"]
IMAGE_DYNAMIC_AXES = {
    "text_classifier": {0: "synonyms"},
    "synonym_index": {0: "synonyms"},
    "seen_mask": {0: "classes"},
    "mask_cls": {2: "classes_plus_void"},
}
# The traced attention layers bake batch and sequence length into their reshapes, so the text
# graph takes a fixed (TEXT_BATCH, context_length) block; the runtime pads prompts to it (the
# tower is causal: trailing padding does not change the end-of-text feature).
TEXT_BATCH = 32


DEFAULT_MAX_SIDE = 8192  # largest padded side a dynamic graph takes


def require_onnx(dynamic: bool = False):
    """The ``onnx`` module (and ``onnxscript`` for a dynamic export), or one clear error naming
    the extra that installs them."""
    try:
        import onnx

        if dynamic:
            import onnxscript  # noqa: F401 (torch.onnx.export(dynamo=True) needs it)
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs onnx, onnxscript and onnxruntime ({e.name} is missing): "
            "pip install -e '.[export]'"
        ) from None
    return onnx


class SeamModule(nn.Module):
    """:meth:`FCCLIP.predict_logits` as a module's forward (what exporters trace)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images, text_classifier, synonym_index, seen_mask):
        return self.model.predict_logits(images, text_classifier, synonym_index, seen_mask)


class TextTowerModule(nn.Module):
    """The backbone's ``encode_text``: int64 tokens (N, L) -> un-normalised features (N, D)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, tokens):
        return self.backbone.encode_text(tokens)


def example_seam_inputs(
    seg: Segmenter, size: Sequence[int], batch: int = 1
) -> tuple[torch.Tensor, ...]:
    """Seam inputs of the right shapes and dtypes for tracing: a (batch, 3, H, W) image, a
    3-class vocabulary with 5 synonyms (the ONNX graph takes batch 1)."""
    m = seg.model
    dim = m.backbone.embed_dim
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, int(size[0]), int(size[1]), generator=g)
    text = F.normalize(torch.randn(5, dim, generator=g), dim=-1)
    synonym_index = torch.tensor([0, 0, 1, 2, 2])
    seen = torch.tensor([True, False, False])
    return tuple(t.to(m.device) for t in (images, text, synonym_index, seen))


def check_size(seg: Segmenter, size: Sequence[int]) -> tuple[int, int]:
    d = seg.model.size_divisibility
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0 or (d > 1 and (h % d or w % d)):
        raise ValueError(f"export size {h}x{w}: height and width must be positive multiples of {d}")
    return h, w


def default_size(seg: Segmenter) -> tuple[int, int]:
    """A square padded size at the config's test ``min_size``."""
    d = seg.model.size_divisibility
    s = (seg.config.model.test.min_size + d - 1) // d * d
    return s, s


def _export(module: nn.Module, args: tuple, path: Path, opset: int, **kw) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on python ints: shapes are fixed here
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            do_constant_folding=True,
            **kw,
        )


def seam_dynamic_shapes(divisibility: int, max_side: int = DEFAULT_MAX_SIDE) -> tuple:
    """``torch.export`` dynamic shapes of the seam's four inputs: padded height and width any
    multiple of ``divisibility`` up to ``max_side``, any number of synonyms and classes."""
    d = max(divisibility, 1)
    h = torch.export.Dim("h_blocks", min=1, max=max(max_side // d, 1))
    w = torch.export.Dim("w_blocks", min=1, max=max(max_side // d, 1))
    syn = torch.export.Dim("synonyms", min=1, max=1 << 20)
    cls = torch.export.Dim("classes", min=1, max=1 << 20)
    return ({2: d * h, 3: d * w}, {0: syn}, {0: syn}, {0: cls})


def _export_dynamic(
    module: nn.Module, args: tuple, path: Path, opset: int, divisibility: int, max_side: int
) -> None:
    """``torch.export`` with symbolic padded height / width (multiples of ``divisibility``)
    and vocabulary sizes, then ONNX; weights inside the one file."""
    shapes = seam_dynamic_shapes(divisibility, max_side)
    onnxscript_log = logging.getLogger("onnxscript")
    level = onnxscript_log.level
    onnxscript_log.setLevel(logging.ERROR)  # one constant-folding note per Split node
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=True,
                dynamic_shapes=shapes,
                input_names=IMAGE_INPUTS,
                output_names=IMAGE_OUTPUTS,
                opset_version=opset,
                external_data=False,
                # onnxscript's optimiser rewrites x + 1e-8 to x (an "add zero" rule with a
                # tolerance): empty masks then pool to 0/0 = NaN. ONNX Runtime optimises the
                # graph itself when it loads it.
                optimize=False,
                verbose=False,
            )
    finally:
        onnxscript_log.setLevel(level)


def exported_task_token(model: nn.Module) -> str | None:
    """The OneFormer task token a graph traced from ``model`` now carries ("semantic",
    "instance" or "panoptic"; the token is a constant of the graph), or None for a model
    without task conditioning."""
    head = getattr(model, "oneformer", None)
    if head is None or not head.task_conditioning:
        return None
    return TASK_NAMES[head.task_index]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_onnx(
    seg: Segmenter,
    output: str | Path,
    sizes: Sequence[Sequence[int]] | None = None,
    opset: int = MIN_OPSET,
    dynamic: bool = False,
    max_side: int = DEFAULT_MAX_SIDE,
) -> dict[str, Any]:
    """Write ``seg``'s image graph(s) and text graph to the folder ``output``.

    Args:
        seg: a PyTorch ``Segmenter`` (FC-CLIP with a template prompt builder).
        output: the export folder (created; must be empty or an earlier export).
        sizes: padded input sizes (H, W), multiples of the size divisibility; one image graph
            each. Default: a square at ``model.test.min_size``. With ``dynamic`` the first is
            only the example the graph is traced on.
        opset: ONNX opset (>= 18).
        dynamic: one image graph with dynamic padded height and width (see the module doc).
        max_side: the largest padded height / width the dynamic graph takes.

    Returns:
        The metadata written to ``ovseg_export.json`` (with ``export_seconds``).
    """
    require_onnx(dynamic)
    if seg.backend is not None:
        raise ValueError("this Segmenter already runs an export; export from the PyTorch model")
    if opset < MIN_OPSET:
        raise ValueError(f"--opset {opset}: ovseg's graphs need opset >= {MIN_OPSET}")
    cfg = seg.config
    if cfg.model.text.type != "templates":
        raise ValueError(
            f"model.text.type={cfg.model.text.type!r}: only the 'templates' prompt builder "
            "exports (its text classifier needs nothing but the text tower)"
        )
    sizes = [check_size(seg, s) for s in (sizes or [default_size(seg)])]
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / METADATA_FILE).is_file():
        raise ValueError(f"--output {out}: folder is not empty and holds no ovseg export")
    out.mkdir(parents=True, exist_ok=True)
    model = seg.model.eval()
    backbone = model.backbone
    t0 = time.perf_counter()
    # Graphs are written to a temporary folder beside the output, then moved in: a failed
    # export never leaves a half-written graph that looks complete.
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        tmp = Path(tmp)
        graphs = []
        with torch.no_grad(), grid_sample_for_export(model):
            if dynamic:
                logger.info("exporting the dynamic-size image graph (torch.export)")
                _export_dynamic(
                    SeamModule(model),
                    example_seam_inputs(seg, sizes[0]),
                    tmp / DYNAMIC_GRAPH,
                    opset,
                    model.size_divisibility,
                    max_side,
                )
                graphs.append({"file": DYNAMIC_GRAPH, "size": None, "max_side": max_side})
            for size in [] if dynamic else sizes:
                name = image_graph_name(size)
                logger.info("exporting image graph %s", name)
                _export(
                    SeamModule(model),
                    example_seam_inputs(seg, size),
                    tmp / name,
                    opset,
                    input_names=IMAGE_INPUTS,
                    output_names=IMAGE_OUTPUTS,
                    dynamic_axes=IMAGE_DYNAMIC_AXES,
                )
                graphs.append({"file": name, "size": list(size)})
            tokens = seg.model.text_encoder.tokenizer(["a photo of a cat."] * TEXT_BATCH)
            tokens = tokens.to(model.device)
            _export(
                TextTowerModule(backbone),
                (tokens,),
                tmp / TEXT_GRAPH,
                opset,
                input_names=["tokens"],
                output_names=["features"],
            )
        (out / METADATA_FILE).unlink(missing_ok=True)  # an earlier export is replaced whole
        for f in tmp.iterdir():
            shutil.move(str(f), out / f.name)
    seconds = time.perf_counter() - t0
    t = cfg.model.test
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ovseg_version": ovseg.__version__,
        "torch_version": torch.__version__,
        "opset": opset,
        "config": to_yaml(cfg),
        "text": {
            "tokenizer": backbone.name,
            "context_length": int(tokens.shape[1]),
            "batch": TEXT_BATCH,
            "templates": list(resolve_templates(cfg.model.text.templates)),
        },
        "text_graph": TEXT_GRAPH,
        "text_graph_sha256": _sha256(out / TEXT_GRAPH),
        "image_graphs": graphs,
        "pixel_mean": list(cfg.model.pixel_mean),
        "pixel_std": list(cfg.model.pixel_std),
        "test_size": {"min_size": t.min_size, "max_size": t.max_size},
        "size_divisibility": model.size_divisibility,
        "dynamic_axes": {
            "image": {k: {str(a): n for a, n in v.items()} for k, v in IMAGE_DYNAMIC_AXES.items()},
            "fixed": (
                "image batch 1"
                + (
                    "; padded height/width dynamic (multiples of size_divisibility up to "
                    f"{max_side})"
                    if dynamic
                    else " and padded height/width (one graph per size in image_graphs)"
                )
                + "; text tokens (text.batch, text.context_length)"
            ),
        },
        "task_token": exported_task_token(model),
        "export_seconds": round(seconds, 2),
    }
    atomic_write_text(out / METADATA_FILE, json.dumps(meta, indent=2) + "\n")
    return meta
