"""``torch.export`` of the tensor seam ``FCCLIP.predict_logits``: a second check that the seam
is traceable, and an ExportedProgram (``.pt2``) for runtimes that take one.

    prog = export_program(seg, "seam.pt2", size=(320, 224))
    mask_cls, mask_logits = load_program("seam.pt2")(images, text, synonym_index, seen_mask)

By default the padded image size and the vocabulary sizes are those of the example inputs
(static shapes); ``dynamic=True`` makes them symbolic (any padded size that is a multiple of the
size divisibility, any vocabulary), the same program the dynamic ONNX export converts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ovseg.export.onnx import SeamModule, check_size, example_seam_inputs, seam_dynamic_shapes
from ovseg.inference.segmenter import Segmenter
from ovseg.models.ops.ms_deform_attn import grid_sample_for_export


def export_program(
    seg: Segmenter,
    path: str | Path | None = None,
    size: Sequence[int] = (320, 224),
    example_inputs: tuple[torch.Tensor, ...] | None = None,
    dynamic: bool = False,
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``seg``'s seam on ``example_inputs`` (default: a 3-class,
    5-synonym vocabulary at padded ``size``), with symbolic image and vocabulary sizes when
    ``dynamic``; saved to ``path`` (``.pt2``) when given."""
    if seg.backend is not None:
        raise ValueError("this Segmenter runs an export; torch.export needs the PyTorch model")
    if example_inputs is None:
        example_inputs = example_seam_inputs(seg, check_size(seg, size))
    with torch.no_grad(), grid_sample_for_export(seg.model):
        shapes = seam_dynamic_shapes(seg.model.size_divisibility) if dynamic else None
        prog = torch.export.export(
            SeamModule(seg.model.eval()), tuple(example_inputs), dynamic_shapes=shapes
        )
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.pt2")
        torch.export.save(prog, str(tmp))
        tmp.replace(path)
    return prog


def load_program(path: str | Path) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The seam callable of a saved ExportedProgram (same signature as ``predict_logits``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ExportedProgram not found: {path}")
    return torch.export.load(str(path)).module()
