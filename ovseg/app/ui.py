"""The Gradio page over a :class:`~ovseg.app.service.SegmentService` (``pip install -e ".[app]"``).

Page: an image, a vocabulary textbox, built-in vocabulary checkboxes, the task, α/β and mask
threshold sliders, example images; outputs: ``gr.AnnotatedImage`` (one mask + label per segment),
the CLI demo's overlay with legend (a downloadable PNG) and the segments as a table and JSON.

API: ``/segment`` takes (image, vocabulary text, task) and returns (annotated image, segments
list), for ``gradio_client``::

    from gradio_client import Client, handle_file
    annotated, segments = Client("http://127.0.0.1:7860/").predict(
        handle_file("cat.jpg"), "cat; sofa [stuff]", "panoptic", api_name="/segment")

Bad input (a vocabulary that does not parse, an unreadable upload) is one message: in the page's
status line (and a toast), or the client's ``AppError`` (a ``gr.Error``); never a traceback. Requests queue and run one at
a time on the process's one model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ovseg.app.service import BUILTIN_CHOICES, TASKS, RequestError, SegmentService
from ovseg.inference.segmenter import Segmenter
from ovseg.utils.image import IMAGE_EXTENSIONS
from ovseg.visualization import class_color

TITLE = "ovseg: open-vocabulary segmentation"
TABLE_COLUMNS = ["id", "label", "isthing", "score", "area", "bbox"]
EXAMPLE_VOCAB = "person, astronaut; cat; cup, mug; flag; table [stuff]; wall [stuff]; sky [stuff]"


def require_gradio():  # noqa: ANN201 - the module
    """``import gradio``, or an ImportError naming the extra to install."""
    try:
        import gradio
    except ImportError as e:
        raise ImportError(
            f"the web app needs Gradio (>= 4): pip install -e '.[app]' ({e})"
        ) from None
    return gradio


def _image_component(gr: Any, **kwargs: Any) -> Any:
    """``gr.Image`` whose upload is read by ovseg: a file PIL cannot open reaches
    :func:`~ovseg.app.service.read_image`, which names the problem, instead of failing inside
    Gradio's pre-processing with a generic error. (Wrapped on the instance: a subclass of a
    Gradio component would make Gradio write a ``.pyi`` stub next to this module.)"""
    component = gr.Image(**kwargs)
    preprocess = component.preprocess

    def tolerant(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except (OSError, ValueError):  # PIL.UnidentifiedImageError is an OSError
            return getattr(payload, "path", None) or ""

    component.preprocess = tolerant
    return component


def _table(segments: list[dict[str, Any]]) -> list[list[Any]]:
    return [[row[c] if c != "bbox" else str(row[c]) for c in TABLE_COLUMNS] for row in segments]


def example_images(folder: str | Path | None) -> list[str]:
    """The images in ``folder`` (sorted), for ``gr.Examples``; none if it does not exist."""
    if folder is None or not Path(folder).is_dir():
        return []
    return [str(p) for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]


def build_app(
    model: Segmenter | SegmentService,
    examples_dir: str | Path | None = None,
    title: str = TITLE,
    max_queue: int = 32,
) -> Any:
    """The ``gr.Blocks`` page and the ``/segment`` endpoint, queued (one request at a time).

    Args:
        model: a loaded segmenter (or a service around one).
        examples_dir: a folder of example images (``demo/examples``).
        max_queue: requests waiting beyond this are turned away (bounded memory).
    """
    gr = require_gradio()
    service = model if isinstance(model, SegmentService) else SegmentService(model)
    d = service.defaults

    def run(image, vocab, task, builtins, alpha, beta, threshold):  # noqa: ANN001, ANN202
        try:
            res = service.segment(image, vocab, task, builtins, alpha, beta, threshold)
        except RequestError as e:
            raise gr.Error(str(e)) from None
        return res

    def ui(image, vocab, task, builtins, alpha, beta, threshold):  # noqa: ANN001, ANN202
        try:
            res = service.segment(image, vocab, task, builtins, alpha, beta, threshold)
        except RequestError as e:  # the message in the page (status line + a toast)
            gr.Warning(str(e))
            return None, None, [], None, f"**Error:** {e}"
        colors = {
            row["label"]: "#{:02x}{:02x}{:02x}".format(*class_color(row["category_id"]))
            for row in res.segments
        }  # the overlay's colours
        return (
            gr.AnnotatedImage(value=(res.image, res.annotations), color_map=colors),
            res.overlay(),
            _table(res.segments),
            res.segments,
            res.summary(),
        )

    def api(image, vocab, task):  # noqa: ANN001, ANN202
        res = run(image, vocab, task, (), None, None, None)
        return (res.image, res.annotations), res.segments

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {title}\nName the classes to find, separated by `;` (synonyms by `,`; "
            "`[stuff]` marks a stuff class), or tick built-in vocabularies; with neither, a "
            "COCO + ADE20K vocabulary segments everything."
        )
        with gr.Row():
            with gr.Column():
                image = _image_component(gr, label="Image", type="filepath", elem_id="image")
                vocab = gr.Textbox(
                    label="Vocabulary",
                    placeholder="zebra; dry grass, hay [stuff]; sky [stuff]",
                    lines=2,
                    elem_id="vocabulary",
                )
                builtins = gr.CheckboxGroup(
                    list(BUILTIN_CHOICES), label="Add built-in vocabularies", elem_id="builtins"
                )
                task = gr.Radio(list(TASKS), value="panoptic", label="Task", elem_id="task")
                with gr.Accordion("Settings", open=False):
                    alpha = gr.Slider(
                        0, 1, value=d["alpha"], step=0.05, label="ensemble α (seen classes)"
                    )
                    beta = gr.Slider(
                        0, 1, value=d["beta"], step=0.05, label="ensemble β (unseen classes)"
                    )
                    threshold = gr.Slider(
                        0,
                        1,
                        value=d["threshold"],
                        step=0.05,
                        label="mask score threshold (panoptic queries / instances)",
                    )
                button = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column():
                annotated = gr.AnnotatedImage(label="Segments", format="png", elem_id="annotated")
                overlay = gr.Image(
                    label="Overlay with legend (PNG)", type="numpy", format="png", elem_id="overlay"
                )
                status = gr.Markdown(elem_id="status")
        table = gr.Dataframe(
            headers=TABLE_COLUMNS, label="Segments", interactive=False, elem_id="table"
        )
        segments = gr.JSON(label="Segments (JSON)", elem_id="segments")
        examples = example_images(examples_dir)
        if examples:
            gr.Examples([[p, EXAMPLE_VOCAB] for p in examples], inputs=[image, vocab])

        inputs = [image, vocab, task, builtins, alpha, beta, threshold]
        button.click(
            ui,
            inputs,
            [annotated, overlay, table, segments, status],
            api_visibility="private",
            concurrency_id="model",
        )
        vocab.submit(
            ui,
            inputs,
            [annotated, overlay, table, segments, status],
            api_visibility="private",
            concurrency_id="model",
        )
        # The named endpoint: (image, vocabulary text, task) -> (annotated image, segments).
        hidden = gr.Button(visible=False)
        hidden.click(
            api,
            [image, vocab, task],
            [annotated, segments],
            api_name="segment",
            concurrency_id="model",
        )
    demo.queue(default_concurrency_limit=1, max_size=max_queue)
    return demo


def launch(
    demo: Any,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    block: bool = True,
) -> Any:
    """Serve ``demo``; with ``block=False`` returns at once (tests; ``demo.close()`` stops it)."""
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=not block,
        show_error=True,
        quiet=not block,
    )
