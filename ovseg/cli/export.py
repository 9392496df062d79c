"""Export a model for deployment: ONNX graphs (image seam + text tower) and their metadata.

The folder runs with ``Segmenter.from_pretrained(DIR)`` (ONNX Runtime; CPU, or CUDA with
onnxruntime-gpu) and wherever the demo takes ``--model``. It holds no PyTorch weights.
"""

from __future__ import annotations

import argparse
import os
import sys

EPILOG = """examples:
  # an official FC-CLIP checkpoint, one graph for 640x864 padded inputs
  python tools/export.py configs/fcclip/fcclip_convnext_large_eval_ade20k.yaml \\
      --weights fcclip_cocopan.pth --size 640x864 --output exported/fcclip_ade
  # the tiny CI model (random weights), two input sizes
  python tools/export.py configs/tests/fcclip_tiny.yaml --size 320x224 --size 224x320 \\
      --output exported/tiny
  # also write a torch.export ExportedProgram of the seam
  python tools/export.py configs/tests/fcclip_tiny.yaml --output exported/tiny --torch-export

  # one graph for every padded size (dynamic height/width, torch.export-based exporter)
  python tools/export.py configs/tests/fcclip_tiny.yaml --dynamic --output exported/tiny_dyn

Without --dynamic, image height and width are fixed per graph (tracing bakes the deformable
attention's level shapes in): pass one --size per padded input size you serve (multiples of the
size divisibility); other sizes are refused at run time. With --dynamic, one graph takes any
padded size up to --max-side (export is slower: it goes through torch.export). Vocabulary size
is dynamic in both.
"""


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected HxW, e.g. 320x224") from None
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="export",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="model config (YAML path or shipped name)")
    p.add_argument("--weights", help="ovseg or official FC-CLIP checkpoint (omit: RANDOM weights)")
    p.add_argument("--output", "--out", required=True, metavar="DIR", help="export folder")
    p.add_argument(
        "--size",
        type=_size,
        action="append",
        metavar="HxW",
        help="padded input size of an image graph; repeat for several (default: a square at "
        "model.test.min_size)",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18; default 18)")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="one image graph with dynamic padded height and width (--size: the example it is "
        "traced on); vocabulary axes are always dynamic",
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=8192,
        metavar="PX",
        help="largest padded height/width a --dynamic graph takes (default 8192)",
    )
    p.add_argument("--torch-export", action="store_true", help="also write seam.pt2")
    p.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda", "auto"),
        help="where the model is traced (default cpu; auto: cuda when available)",
    )
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    return p


def main(argv: list[str] | None = None) -> int:
    """Export; returns 0, or 2 with one line on stderr for a set-up error."""
    args = build_parser().parse_intermixed_args(argv)
    try:
        from ovseg.export.onnx import export_onnx, require_onnx
        from ovseg.inference.segmenter import Segmenter

        require_onnx(args.dynamic)
        import torch

        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        seg = Segmenter.from_config(
            args.config, weights=args.weights, overrides=args.overrides, device=device
        )
        meta = export_onnx(
            seg,
            args.output,
            sizes=args.size,
            opset=args.opset,
            dynamic=args.dynamic,
            max_side=args.max_side,
        )
        if args.torch_export:
            from ovseg.export.onnx import default_size
            from ovseg.export.torch_export import export_program

            size = args.size[0] if args.size else default_size(seg)
            export_program(
                seg, os.path.join(args.output, "seam.pt2"), size=size, dynamic=args.dynamic
            )
    except Exception as e:  # one line for the user; OVSEG_DEBUG=1 shows the traceback
        from ovseg.cli.common import is_debug

        if is_debug():
            raise
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    sizes = ", ".join(
        f"{g['size'][0]}x{g['size'][1]}" if g["size"] else f"dynamic (up to {g['max_side']})"
        for g in meta["image_graphs"]
    )
    print(
        f"exported to {args.output} in {meta['export_seconds']:.1f} s: image graph(s) {sizes}, "
        f"text graph; run with Segmenter.from_pretrained({str(args.output)!r})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
