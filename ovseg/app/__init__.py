"""The web app: a Gradio page and a ``/segment`` API over one loaded segmenter.

``service`` holds the per-request work (vocabulary, locked predict, outputs) and needs no Gradio;
``ui`` builds the ``gr.Blocks`` (Gradio is imported only there, lazily:
``pip install -e ".[app]"``). ``python demo/app.py`` (``ovseg.cli.app``) serves it.
"""

from ovseg.app.service import (
    BUILTIN_CHOICES,
    RequestError,
    SegmentResult,
    SegmentService,
    parse_vocabulary,
)


def build_app(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - lazy Gradio import
    """See :func:`ovseg.app.ui.build_app` (imports Gradio)."""
    from ovseg.app.ui import build_app as _build_app

    return _build_app(*args, **kwargs)


__all__ = [
    "BUILTIN_CHOICES",
    "RequestError",
    "SegmentResult",
    "SegmentService",
    "build_app",
    "parse_vocabulary",
]
