"""``Segmenter``: the Python API. Free of CLI concerns so scripts, web demos and dataset tools
can rely on it.

    from ovseg import Segmenter, Vocabulary
    seg = Segmenter.from_config("configs/tests/fcclip_tiny.yaml")
    pred = seg.predict("image.jpg", Vocabulary.parse("zebra; dry grass, hay [stuff]"), task="panoptic")
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.checkpoint import (
    CheckpointError,
    checkpoint_kind,
    load_checkpoint,
    load_model_state,
    state_dict_from_checkpoint,
)
from ovseg.config import Config, config_from_yaml_string, load_config, to_yaml
from ovseg.inference.sliding import Window, sliding_windows
from ovseg.models.builder import build_model
from ovseg.models.postprocess import MaskResize, semantic_argmax_rows
from ovseg.models.segmentors.fcclip import FCCLIP, TASKS
from ovseg.structures import Instances, Prediction, TextClassifier
from ovseg.text.vocabulary import Vocabulary, load_descriptions, resolve_vocabulary
from ovseg.utils.image import check_resizable, load_image, resize_shortest_edge
from ovseg.utils.precision import DTYPES, fastest, warn_if_emulated
from ovseg.utils.timing import NULL_TIMER, StageTimer
from ovseg.zoo.hub import HUB_WEIGHTS

logger = logging.getLogger(__name__)

VocabularyLike = Vocabulary | str | Sequence[str] | None
# FCCLIP.predict_logits' signature: (images, text_classifier, synonym_index, seen_mask) ->
# (mask_cls, mask_logits); the ONNX Runtime backend is one.
SeamBackend = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]


class Segmenter:
    """An open-vocabulary segmenter: a model, its config, and a device.

    Use :meth:`from_config` or :meth:`from_pretrained` to build one.
    """

    def __init__(
        self,
        model: FCCLIP,
        config: Config,
        device: str | torch.device = "cpu",
        backend: SeamBackend | None = None,
    ):
        """``backend``: a callable with the signature of :meth:`FCCLIP.predict_logits` that
        replaces the model's own forward (the ONNX Runtime backend); None runs ``model``."""
        self.config = config
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.backend = backend
        self._default_vocab: Vocabulary | None = None
        # model.text.descriptions: (path, its sentences), and the vocabularies carrying them
        self._descriptions: tuple[str, dict[str, tuple[str, ...]]] | None = None
        self._described: OrderedDict[Vocabulary, Vocabulary] = OrderedDict()
        self._checked_precision: tuple[str, torch.device] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls,
        config: str | Path | Config,
        weights: str | Path | None = None,
        overrides: Sequence[str] = (),
        device: str | torch.device = "cpu",
    ) -> Segmenter:
        """Build any config; without ``weights`` the trainable part is randomly initialised."""
        cfg = config if isinstance(config, Config) else load_config(config, overrides)
        model = build_model(cfg.model)
        seg = cls(model, cfg, device)
        if weights is not None:
            seg.load_weights(weights)
        return seg

    @classmethod
    def from_pretrained(
        cls,
        path_or_name: str | Path,
        config: str | Path | Config | None = None,
        device: str | torch.device = "cpu",
        overrides: Sequence[str] = (),
        zoo_file: str | Path | None = None,
    ) -> Segmenter:
        """Load an ovseg checkpoint (``.pth``, or ``.safetensors`` with its config in the file's
        metadata or a ``config.yaml`` beside it), an official FC-CLIP checkpoint (needs
        ``config``), a Hub-layout folder (``model.safetensors`` + ``config.yaml``, as
        ``tools/publish_model.py --hub-folder`` writes it), an export folder (``tools/export.py``;
        run by ONNX Runtime, CUDA when ``device`` is cuda), a Hugging Face Hub reference
        (``hf://OWNER/REPO[@REVISION]`` in ovseg's layout, or ``.../FILE.safetensors``; through
        huggingface_hub's cache, ``HF_HUB_OFFLINE=1`` honoured), or a model zoo name
        (downloaded and cached on first use)."""
        spec = str(path_or_name)
        if spec.startswith("hf://"):
            from ovseg.zoo.hub import HUB_WEIGHT_SUFFIXES, fetch_hub_url, parse_hub_url

            ref = parse_hub_url(spec)
            if ref.filename is not None and not ref.filename.endswith(HUB_WEIGHT_SUFFIXES):
                raise CheckpointError(
                    f"{spec}: weights from the Hub must be safetensors (nothing from the Hub is "
                    "unpickled); publish them with tools/publish_model.py --hub-folder"
                )
            path_or_name = fetch_hub_url(spec)
        path = Path(path_or_name)
        if path.is_dir() and (path / HUB_WEIGHTS).is_file():
            path = path / HUB_WEIGHTS  # a Hub-layout folder; config.yaml beside it
        if path.is_dir():
            from ovseg.inference.onnx_backend import load_export

            if config is not None:
                raise ValueError(f"{path} is an export folder: it carries its config, drop config=")
            host, cfg, backend = load_export(path, device, overrides)
            return cls(host, cfg, device, backend=backend)
        looks_like_path = (
            path.suffix in (".pth", ".pt", ".pkl", ".ckpt", ".bin", ".safetensors")
            or len(path.parts) > 1
        )
        if looks_like_path and not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        if not path.is_file():
            from ovseg import zoo

            entry = zoo.get_entry(str(path_or_name), zoo_file=zoo_file)
            path = zoo.download(entry, zoo_file=zoo_file)
            if config is None and entry.config:
                config = entry.config
        ckpt = _read_checkpoint(path)
        kind = checkpoint_kind(ckpt)
        if isinstance(config, (str, Path)):
            cfg = load_config(config, overrides)
        elif isinstance(config, Config):
            cfg = config
        elif kind == "ovseg" and isinstance(ckpt.get("config"), str):
            cfg = config_from_yaml_string(ckpt["config"], overrides)
        elif kind == "ovseg":
            raise CheckpointError(
                f"{path} carries no config (no metadata 'config', no config.yaml beside it): "
                "pass config=..."
            )
        else:
            raise CheckpointError(
                f"{path} is an official FC-CLIP checkpoint without a config: pass config=... "
                "(e.g. fcclip/fcclip_convnext_large_eval_ade20k.yaml)"
            )
        model = build_model(cfg.model)
        seg = cls(model, cfg, device)
        seg._load_state(ckpt, str(path))
        return seg

    def load_weights(self, path: str | Path) -> None:
        """Load an ovseg or FC-CLIP checkpoint's weights into this model."""
        self._require_torch_model("load_weights")
        self._load_state(_read_checkpoint(path), str(path))

    def _load_state(self, ckpt: dict, source: str) -> None:
        state = state_dict_from_checkpoint(ckpt, source)
        load_model_state(self.model, state, source=source, strict=True, require_frozen=True)
        self.model.to(self.device)

    def save(self, path: str | Path, include_clip: bool | None = None) -> Path:
        """Write an ovseg checkpoint: resolved config + trainable weights (+ the frozen CLIP when
        no named pretrained source provides it). Written atomically."""
        from ovseg.checkpoint import save_model_checkpoint

        self._require_torch_model("save")

        return save_model_checkpoint(
            path, self.model, to_yaml(self.config), include_clip=include_clip
        )

    def _require_torch_model(self, what: str) -> None:
        if self.backend is not None:
            raise ValueError(f"Segmenter.{what} needs the PyTorch model; this one runs an export")

    # ------------------------------------------------------------------ inference
    @property
    def precision(self) -> str:
        """The precision inference runs in: ``model.test.precision``, with ``"auto"`` resolved
        for this device (bf16 where native, fp16 on a GPU without bf16, else fp32)."""
        p = self.config.model.test.precision
        if p not in ("fp32", "bf16", "fp16", "auto"):
            raise ValueError(
                f"model.test.precision must be 'fp32', 'bf16', 'fp16' or 'auto'; got {p!r}"
            )
        return fastest(self.device) if p == "auto" else p

    def _autocast(self):
        p = self.precision
        if self._checked_precision != (p, self.device):
            warn_if_emulated(self.device, p, "model.test.precision", auto_hint=True)
            self._checked_precision = (p, self.device)
        dtype = DTYPES[p]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def vocabulary(self, vocab: VocabularyLike = None) -> Vocabulary:
        """Normalise ``vocab`` (Vocabulary, built-in name, file, ';'-string, list of names);
        None gives the config's default (``model.test.vocabulary``). With
        ``model.text.descriptions``, a vocabulary without descriptions of its own gets that
        file's (a key that matches none of its classes is an error naming the key)."""
        if vocab is None:
            if self._default_vocab is None:
                name = self.config.model.test.vocabulary
                if not name:
                    raise ValueError("no vocabulary given and model.test.vocabulary is not set")
                self._default_vocab = resolve_vocabulary(name)
            return self._describe(self._default_vocab)
        return self._describe(resolve_vocabulary(vocab))

    def _describe(self, vocab: Vocabulary) -> Vocabulary:
        path = self.config.model.text.descriptions
        if not path or vocab.descriptions:
            return vocab
        if self._descriptions is None or self._descriptions[0] != path:
            self._descriptions = (path, load_descriptions(path))
            self._described.clear()
        out = self._described.get(vocab)
        if out is None:
            out = vocab.with_descriptions(self._descriptions[1], source=str(path))
            self._described[vocab] = out
            while len(self._described) > 8:  # bounded: a server sees many free-text vocabularies
                self._described.popitem(last=False)
        return out

    def encode_vocabulary(self, vocab: VocabularyLike = None) -> TextClassifier:
        """The text classifier of ``vocab``: computed once, then cached (memory and disk)."""
        return self.model.encode_vocabulary(self.vocabulary(vocab))

    def use_text_classifier(self, classifier: TextClassifier) -> None:
        """Adopt a text classifier encoded elsewhere (another process encoded it once and sent
        the tensors): later :meth:`predict` calls with its vocabulary do not encode it again."""
        self.model.text_encoder.remember(classifier)

    def prepare(self, image: Any) -> PreparedImage:
        """Read ``image`` (path, PIL, array) and resize it to model resolution (what
        :meth:`predict_batch` takes; cheap to run in a data-loader worker)."""
        t = self.config.model.test
        return prepare_image(image, t.min_size, t.max_size, t.max_image_pixels)

    def _select_task(self, task: str) -> None:
        """OneFormer's task token follows the requested output (a model without one ignores
        it; an exported graph carries the token chosen at export and refuses a request that
        needs another, :meth:`ExportedFCCLIP.select_task`)."""
        select = getattr(self.model, "select_task", None)
        if select is not None:
            select(task)

    def _slide_settings(
        self, task: str, return_intermediates: bool
    ) -> tuple[list[int], list[int]] | None:
        """``(crop_size, stride)`` in slide mode, None in whole-image mode; bad settings, and
        what slide mode cannot compute, fail here, before any work."""
        t = self.config.model.test
        t.check_task(task)
        if t.mode == "whole":
            return None
        if return_intermediates:
            raise ValueError(
                "return_intermediates needs one forward pass: use model.test.mode='whole'"
            )
        return list(t.crop_size), list(t.stride)

    @torch.inference_mode()
    def predict(
        self,
        image: Any,
        vocab: VocabularyLike = None,
        task: str = "panoptic",
        return_intermediates: bool = False,
        timer: StageTimer = NULL_TIMER,
    ) -> Prediction:
        """Segment one image into ``vocab``.

        With ``model.test.mode: slide`` the resized image is cut into overlapping windows
        (``crop_size`` every ``stride``), each window is segmented, and ``sem_seg`` is the
        per-pixel mean of the windows' semantic scores, resized to the input image; that mode
        computes ``task="semantic"`` only. A grid of one window is whole-image inference.

        Args:
            image: a path, a PIL image, an (H, W, 3) uint8 RGB array, or a
                :class:`PreparedImage` (:meth:`prepare`: already read and resized).
            vocab: the classes (see :meth:`vocabulary`).
            task: "semantic", "instance", "panoptic" or "all"; only that is computed.
            return_intermediates: keep the model's intermediate tensors in ``extras`` (whole
                image mode only).
            timer: collects per-stage times (tools/benchmark.py).

        Returns:
            A :class:`Prediction` at the input image's resolution.
        """
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        slide = self._slide_settings(task, return_intermediates)
        self._select_task(task)
        if return_intermediates and self.backend is not None:
            raise ValueError(
                "return_intermediates needs the PyTorch model; this one runs an export"
            )
        vocabulary = self.vocabulary(vocab)
        with timer("text"):
            text = self.encode_vocabulary(vocabulary)
        with timer("preprocess"):
            prepared = image if isinstance(image, PreparedImage) else self.prepare(image)
            resized, (h0, w0) = prepared
            windows = sliding_windows(resized.shape[:2], *slide) if slide else None
            seen = self.model.seen_mask(vocabulary)
        if windows is not None and len(windows) > 1:
            pred = self._predict_windows(resized, windows, (h0, w0), vocabulary, text, seen, timer)
            pred.extras["windows"] = windows
            return pred
        run = self._forward([resized], text, seen, timer, intermediates=return_intermediates)
        pred = self._prediction(run, 0, resized, (h0, w0), vocabulary, task, timer)
        if windows is not None:
            pred.extras["windows"] = windows
        if return_intermediates:
            out = dict(run.out)
            out["pixel_decoder"] = {
                "mask_features": out.pop("mask_features"),
                "multi_scale_features": out.pop("multi_scale_features"),
            }
            pred.extras.update({"input_image": run.chw[0], **out})
        return pred

    @torch.inference_mode()
    def predict_batch(
        self,
        images: Sequence[PreparedImage],
        vocab: VocabularyLike = None,
        task: str = "panoptic",
        timer: StageTimer = NULL_TIMER,
    ) -> list[Prediction]:
        """Segment several prepared images (:meth:`prepare`); one forward pass per run of
        images of equal model-resolution size, so no image is padded for another's sake and each
        result is the one :meth:`predict` gives (up to float rounding of batched kernels). Slide
        mode and export backends take one image per pass. ``timer`` sums each stage over the
        images (tools/benchmark.py)."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        slide = self._slide_settings(task, False)
        if slide is not None or self.backend is not None:
            return [self.predict(im, vocab, task, timer=timer) for im in images]
        self._select_task(task)
        vocabulary = self.vocabulary(vocab)
        with timer("text"):
            text = self.encode_vocabulary(vocabulary)
        seen = self.model.seen_mask(vocabulary)
        preds: list[Prediction | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(tuple(im.resized.shape), []).append(i)
        for idx in groups.values():
            run = self._forward([images[i].resized for i in idx], text, seen, timer)
            for j, i in enumerate(idx):
                im = images[i]
                preds[i] = self._prediction(
                    run, j, im.resized, im.original_size, vocabulary, task, timer
                )
        return preds  # type: ignore[return-value]

    def _prediction(
        self,
        run: _Forward,
        index: int,
        resized: np.ndarray,
        output_size: tuple[int, int],
        vocabulary: Vocabulary,
        task: str,
        timer: StageTimer,
    ) -> Prediction:
        """Post-process image ``index`` of a forward pass into a :class:`Prediction`."""
        h0, w0 = output_size
        with timer("postprocess"):
            res = self.model.postprocess(
                run.out["mask_cls"][index],
                run.out["pred_masks"][index],
                run.padded_size,
                resized.shape[:2],
                (h0, w0),
                vocabulary.isthing,
                task,
            )
        pred = Prediction(
            vocabulary=vocabulary,
            image_size=(h0, w0),
            sem_seg=res.get("sem_seg"),
            sem_seg_labels=res.get("sem_seg_labels"),
            sem_seg_label_scores=res.get("sem_seg_label_scores"),
        )
        if "panoptic_seg" in res:
            pred.panoptic_seg = res["panoptic_seg"]
            pred.segments_info = [
                {**s, "label": vocabulary[s["category_id"]].name} for s in res["segments_info"]
            ]
        if "instances" in res:
            inst = res["instances"]
            pred.instances = Instances(
                masks=inst["masks"], scores=inst["scores"], labels=inst["labels"]
            )
            pred.extras["instance_query_index"] = inst["query_index"]
        pred.extras["input_size"] = tuple(resized.shape[:2])
        return pred

    def _forward(
        self,
        images: Sequence[np.ndarray],
        text: TextClassifier,
        seen: torch.Tensor,
        timer: StageTimer = NULL_TIMER,
        intermediates: bool = False,
    ) -> _Forward:
        """The model's tensor seam on (h, w, 3) uint8 RGB images at model resolution (padded to
        a common size), up to the ensembled class scores (everything before post-processing)."""
        m = self.model
        with timer("preprocess"):
            chw = [torch.from_numpy(np.array(im, copy=True)).permute(2, 0, 1) for im in images]
            x = m.normalize_and_pad(chw)
        if self.backend is not None:
            with timer("model"):
                mask_cls, mask_logits = self.backend(x, text.embeddings, text.synonym_index, seen)
            out = {"mask_cls": mask_cls, "pred_masks": mask_logits}
            return _Forward(chw, tuple(x.shape[-2:]), out)
        with self._autocast():
            out = m.predict_intermediates(
                x, text.embeddings, text.synonym_index, seen, aux_outputs=intermediates, timer=timer
            )
        return _Forward(chw, tuple(x.shape[-2:]), out)

    def _predict_windows(
        self,
        resized: np.ndarray,
        windows: Sequence[Window],
        output_size: tuple[int, int],
        vocabulary: Vocabulary,
        text: TextClassifier,
        seen: torch.Tensor,
        timer: StageTimer,
    ) -> Prediction:
        """Sliding-window semantic inference: each window's (C, h, w) scores at model
        resolution are summed into the resized image's frame, divided by the per-pixel window
        count, and the mean is resized (bilinear) to ``output_size``."""
        h, w = resized.shape[:2]
        total = torch.zeros(len(vocabulary), h, w, device=self.device)
        count = torch.zeros(h, w, device=self.device)
        for win in windows:
            crop = resized[win.y1 : win.y2, win.x1 : win.x2]
            run = self._forward([crop], text, seen, timer=timer)
            with timer("postprocess"):
                scores = self.model.postprocess(
                    run.out["mask_cls"][0],
                    run.out["pred_masks"][0],
                    run.padded_size,
                    win.size,
                    win.size,
                    vocabulary.isthing,
                    "semantic",
                )["sem_seg"]
                total[:, win.y1 : win.y2, win.x1 : win.x2] += scores
                count[win.y1 : win.y2, win.x1 : win.x2] += 1
        labels = label_scores = None
        with timer("postprocess"):
            sem_seg = total.div_(count)  # in place: (C, h, w) can be large (ADE-847)
            H, W = output_size
            cap = self.config.model.test.max_score_elements
            if (h, w) != (H, W) and cap and len(vocabulary) * H * W > cap:
                # Too large to hold per class at the output size: keep the scores at model
                # resolution and resize them band by band for the argmax.
                labels, label_scores = semantic_argmax_rows(
                    sem_seg, MaskResize((h, w), (h, w), (H, W))
                )
            elif (h, w) != (H, W):
                sem_seg = F.interpolate(
                    sem_seg[None], size=output_size, mode="bilinear", align_corners=False
                )[0]
        pred = Prediction(
            vocabulary=vocabulary,
            image_size=tuple(output_size),
            sem_seg=sem_seg,
            sem_seg_labels=labels,
            sem_seg_label_scores=label_scores,
        )
        pred.extras["input_size"] = (h, w)
        return pred


def _read_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict; a missing file is a :class:`CheckpointError` naming it."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return load_checkpoint(path)


class PreparedImage(NamedTuple):
    """An image read and resized for the model (:func:`prepare_image`)."""

    resized: np.ndarray  # (h, w, 3) uint8 RGB at model resolution
    original_size: tuple[int, int]  # (H, W) of the image as read: predictions come back at it


def prepare_image(
    image: Any, min_size: int, max_size: int = 0, max_pixels: int = 0
) -> PreparedImage:
    """Read ``image`` (path, PIL, (H, W, 3) array) and resize its short side to ``min_size``
    (long side at most ``max_size``), as :meth:`Segmenter.predict` does. Raises
    :class:`~ovseg.utils.image.ImageLoadError` for an unreadable image, one over ``max_pixels``
    (checked before decoding; 0 = no limit) or one the resize cannot take (a thin strip)."""
    rgb = load_image(image, max_pixels=max_pixels)
    check_resizable(rgb.shape[0], rgb.shape[1], min_size, max_size)
    return PreparedImage(resize_shortest_edge(rgb, min_size, max_size), tuple(rgb.shape[:2]))


class _Forward(NamedTuple):
    """What :meth:`Segmenter._forward` computed for a batch of images."""

    chw: list[torch.Tensor]  # (3, h, w) uint8 model inputs before normalisation and padding
    padded_size: tuple[int, int]
    out: dict[str, Any]  # FCCLIP.predict_intermediates
