"""``python demo/app.py (--model NAME | --config C [--weights W]) [--host H] [--port P] [--share]``:
serve the web app (see :mod:`ovseg.app`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "demo" / "examples"

EPILOG = """\
examples:
  # a zoo name, an ovseg checkpoint, a Hub-layout folder or hf://OWNER/REPO[@REVISION]
  python demo/app.py --model hf://OWNER/REPO --port 7860
  # the tiny random-weight test model (its output is noise; checks the set-up in seconds)
  python demo/app.py --config tests/fcclip_tiny.yaml --device cpu
then open http://127.0.0.1:7860/ ; the API: gradio_client.Client(URL).predict(
  handle_file("img.jpg"), "cat; sofa [stuff]", "panoptic", api_name="/segment")
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="app.py",
        description="Open-vocabulary segmentation in the browser (Gradio) and over an API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME_OR_PATH", help="zoo name, checkpoint, folder, hf://")
    src.add_argument("--config", metavar="YAML", help="model config (with --weights, or random)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint for --config (omit: random)")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: loopback)")
    p.add_argument("--port", type=int, default=7860, help="default: 7860")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument(
        "--examples", default=str(EXAMPLES), metavar="DIR", help="folder of example images"
    )
    return p


def load_segmenter(args: argparse.Namespace):  # noqa: ANN201 - Segmenter, imported lazily
    """The one model this process serves (the CLI demo's loading rules)."""
    from ovseg.cli.demo import _build_segmenter

    return _build_segmenter(args)


def main(argv: list[str] | None = None) -> int:
    """Load the model once, build the page, serve until interrupted; 2 on a set-up error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.weights is not None and args.config is None:
        parser.error("--weights goes with --config; with --model the checkpoint is the model")
    try:
        from ovseg.app.ui import require_gradio

        require_gradio()
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        seg = load_segmenter(args)
    except Exception as e:  # one line; OVSEG_DEBUG=1 shows the traceback
        from ovseg.cli.common import is_debug

        if is_debug():
            raise
        print(f"error: could not set up the model: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    from ovseg.app.ui import build_app, launch

    demo = build_app(seg, examples_dir=args.examples)
    launch(demo, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
