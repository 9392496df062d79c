"""ONNX Runtime backend: runs an ovseg export folder (``tools/export.py``) behind ``Segmenter``.

An export folder holds two graphs and one metadata file, no PyTorch weights::

    image.onnx     the tensor seam FCCLIP.predict_logits: (images, text_classifier,
                   synonym_index, seen_mask) -> (mask_cls, mask_logits): one graph per padded
                   input size (image_{H}x{W}.onnx, traced) or one dynamic-size graph
                   (image_dynamic.onnx, ``tools/export.py --dynamic``)
    text.onnx      the CLIP text tower: tokens (N, L) int64 -> un-normalised features (N, D)
    ovseg_export.json   format version, ovseg version, the resolved config, tokenizer, templates,
                   pixel mean/std, test sizes, size divisibility, dynamic axes, graph files,
                   and the OneFormer task token the image graph carries ("task_token")

Pre-processing (resize, normalise, pad), the text classifier (tokenise, template ensemble,
cache) and post-processing are the library's own (the same methods the PyTorch path calls);
only the two network forwards run in ONNX Runtime. This module is imported only when an export
folder is opened, so onnxruntime stays an optional dependency (``pip install -e ".[export]"``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ovseg.config import Config, config_from_yaml_string
from ovseg.models.backbones.clip import register_clip_configs
from ovseg.models.oneformer import REQUEST_TOKEN, TASK_NAMES, token_name
from ovseg.models.segmentors.fcclip import FCCLIP
from ovseg.text.registry import PROMPT_BUILDERS
from ovseg.text.vocabulary import Vocabulary, resolve_vocabulary

METADATA_FILE = "ovseg_export.json"
TEXT_GRAPH = "text.onnx"
FORMAT = "ovseg-onnx"
FORMAT_VERSION = 2  # 2: an image graph may be dynamic ("size": null, "max_side")
READABLE_VERSIONS = (1, 2)
DYNAMIC_GRAPH = "image_dynamic.onnx"
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt", ".pkl")


class ExportFormatError(ValueError):
    """An export folder that cannot be used (missing file, other format version, bad size)."""


def image_graph_name(size: Sequence[int]) -> str:
    """File name of the image graph for padded input size (H, W)."""
    return f"image_{int(size[0])}x{int(size[1])}.onnx"


def is_export_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding an ovseg export (its metadata file)."""
    p = Path(path)
    return p.is_dir() and (p / METADATA_FILE).is_file()


def require_onnxruntime():
    """The ``onnxruntime`` module, or one clear error naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "running an ONNX export needs onnxruntime: pip install -e '.[export]' "
            "(or pip install onnxruntime)"
        ) from None
    return onnxruntime


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The export's metadata, checked: format, format version, and that every graph exists."""
    folder = Path(folder)
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file():
        raise ExportFormatError(
            f"{folder} is not an ovseg export: {METADATA_FILE} is missing (write one with "
            "tools/export.py CONFIG --weights W --output DIR)"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportFormatError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportFormatError(f"{meta_path}: not an ovseg ONNX export (format != {FORMAT!r})")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ExportFormatError(
            f"{folder}: export format version {version!r} (written by ovseg "
            f"{meta.get('ovseg_version', '?')}); this ovseg reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: "
            "re-export the model with this ovseg's tools/export.py"
        )
    files = [meta["text_graph"], *(g["file"] for g in meta["image_graphs"])]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise ExportFormatError(
            f"{folder}: export incomplete, missing graph file(s) {', '.join(missing)}: "
            "re-export the model"
        )
    return meta


def _session(path: Path, providers: list[str]):
    ort = require_onnxruntime()
    opts = ort.SessionOptions()
    # Errors only: ORT warns about the symbolic class axis of every output it infers.
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def _providers(device: torch.device) -> list[str]:
    ort = require_onnxruntime()
    available = ort.get_available_providers()
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError(
                "device='cuda' but onnxruntime has no CUDAExecutionProvider "
                f"(available: {', '.join(available)}): pip install onnxruntime-gpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxTextTower:
    """The text tower's contract for a prompt builder (``encode_text``, ``name``,
    ``context_length``), run by ONNX Runtime on ``text.onnx``."""

    supports_prefix_cache = False

    def __init__(
        self, path: Path, name: str, context_length: int, batch: int, providers: list[str]
    ):
        self.session = _session(path, providers)
        self.name = name
        self.context_length = context_length
        self.batch = batch

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Un-normalised features (N, D) float32 of int64 tokens (N, L), L <= context length.

        The graph takes fixed (batch, context_length) blocks: prompts are zero-padded to the
        context (the tower is causal, so the end-of-text feature is unchanged) and the last
        block is filled with all-zero rows, whose outputs are dropped."""
        n, length = tokens.shape
        if length > self.context_length:
            raise ValueError(f"tokens of length {length} > text context {self.context_length}")
        block = np.zeros((self.batch, self.context_length), dtype=np.int64)
        out = []
        for i in range(0, n, self.batch):
            chunk = tokens[i : i + self.batch].cpu().numpy()
            block[:] = 0
            block[: len(chunk), :length] = chunk
            (feats,) = self.session.run(None, {"tokens": block})
            out.append(feats[: len(chunk)])
        return torch.from_numpy(np.concatenate(out))


class OnnxSeam:
    """``FCCLIP.predict_logits`` run by ONNX Runtime: the same signature, tensors in and out.

    One session per exported padded size, created on first use; a size that was not exported
    is refused with the sizes that were. A dynamic graph takes every padded size up to its
    ``max_side`` (one session).
    """

    def __init__(self, folder: Path, graphs: Sequence[dict], providers: list[str]):
        self.folder = folder
        self.files = {tuple(g["size"]): g["file"] for g in graphs if g.get("size")}
        dynamic = [g for g in graphs if not g.get("size")]
        self.dynamic_file = dynamic[0]["file"] if dynamic else None
        self.max_side = int(dynamic[0].get("max_side", 0)) if dynamic else 0
        self.providers = providers
        self._sessions: dict[tuple[int, int] | None, Any] = {}

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return sorted(self.files)

    def session(self, size: tuple[int, int]):
        if self.dynamic_file is not None and size not in self.files:
            if max(size) > self.max_side:
                raise ExportFormatError(
                    f"padded input {size[0]}x{size[1]} exceeds this dynamic export's largest "
                    f"side {self.max_side}: lower model.test.max_size or re-export with a "
                    "larger --max-side"
                )
            if None not in self._sessions:
                self._sessions[None] = _session(self.folder / self.dynamic_file, self.providers)
            return self._sessions[None]
        if size not in self.files:
            have = ", ".join(f"{h}x{w}" for h, w in self.sizes)
            raise ExportFormatError(
                f"this export takes padded inputs of {have}, not {size[0]}x{size[1]}: re-export "
                f"with --size {size[0]}x{size[1]} (or set model.test.min_size/max_size so "
                "images resize to an exported size)"
            )
        if size not in self._sessions:
            self._sessions[size] = _session(self.folder / self.files[size], self.providers)
        return self._sessions[size]

    def __call__(
        self,
        images: torch.Tensor,
        text_classifier: torch.Tensor,
        synonym_index: torch.Tensor,
        seen_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`ovseg.models.segmentors.fcclip.FCCLIP.predict_logits`."""
        sess = self.session(tuple(int(s) for s in images.shape[-2:]))
        mask_cls, mask_logits = sess.run(
            None,
            {
                "images": images.detach().float().cpu().numpy(),
                "text_classifier": text_classifier.detach().float().cpu().numpy(),
                "synonym_index": synonym_index.cpu().numpy().astype(np.int64),
                "seen_mask": seen_mask.cpu().numpy().astype(bool),
            },
        )
        dev = images.device
        return torch.from_numpy(mask_cls).to(dev), torch.from_numpy(mask_logits).to(dev)


class ExportedFCCLIP(nn.Module):
    """What ``Segmenter`` needs of a model besides the seam, without its weights: the
    pre-processing, the text classifier, the seen mask and the post-processing. These are
    FCCLIP's own methods (bound here, not copied), so both backends process alike."""

    normalize_and_pad = FCCLIP.normalize_and_pad
    postprocess = FCCLIP.postprocess
    seen_mask = FCCLIP.seen_mask
    encode_vocabulary = FCCLIP.encode_vocabulary
    device = FCCLIP.device

    def __init__(self, cfg: Config, text_encoder: Any, task_token: str | None = None):
        """``task_token``: the OneFormer task token the image graph carries (None: none)."""
        super().__init__()
        self.task_token = task_token
        m, t = cfg.model, cfg.model.test
        self.register_buffer("pixel_mean", torch.tensor(m.pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(m.pixel_std).view(-1, 1, 1), False)
        self.size_divisibility = t.size_divisibility
        self.object_mask_threshold = t.object_mask_threshold
        self.overlap_threshold = t.overlap_threshold
        self.detections_per_image = t.detections_per_image
        self.max_score_elements = t.max_score_elements
        self.max_postprocess_pixels = t.max_postprocess_pixels
        self.text_encoder = text_encoder
        self.train_vocabulary: Vocabulary | None = (
            resolve_vocabulary(m.text.train_vocabulary) if m.text.train_vocabulary else None
        )

    def select_task(self, task: str) -> None:
        """A OneFormer graph answers every request with the task token traced into it, so a
        request whose token differs is refused instead of answered with the wrong token
        (unknown tasks are left to the caller's own check)."""
        if self.task_token is None or task not in REQUEST_TOKEN:
            return
        needed = token_name(task)
        if needed != self.task_token:
            asks = [t for t in REQUEST_TOKEN if token_name(t) == self.task_token]
            raise ValueError(
                f"task={task!r} needs OneFormer's {needed!r} task token, but this export's "
                f"image graph carries the {self.task_token!r} token (it answers "
                f"{' / '.join(map(repr, asks))} only): export once more for it, e.g. "
                f"tools/export.py ... model.test.task={needed}"
            )


def _task_token(folder: Path, meta: dict[str, Any], cfg: Config) -> str | None:
    """The metadata's ``task_token``, checked; exports written before it was recorded carry
    the token of their config's ``model.test.task`` (what the exporter selected initially)."""
    if "task_token" in meta:
        token = meta["task_token"]
        if token is not None and token not in TASK_NAMES:
            raise ExportFormatError(
                f"{folder}: task_token {token!r} is none of {TASK_NAMES} (or null)"
            )
        return token
    if not cfg.model.decoder.task_conditioning:
        return None
    return token_name(cfg.model.test.task)


def load_export(
    folder: str | Path, device: str | torch.device = "cpu", overrides: Sequence[str] = ()
) -> tuple[ExportedFCCLIP, Config, OnnxSeam]:
    """(model host, config, seam backend) of an export folder, ready for ``Segmenter``."""
    folder = Path(folder)
    meta = read_metadata(folder)
    require_onnxruntime()
    cfg = config_from_yaml_string(meta["config"], overrides)
    providers = _providers(torch.device(device))
    text = meta["text"]
    register_clip_configs()
    tower = OnnxTextTower(
        folder / meta["text_graph"],
        text["tokenizer"],
        text["context_length"],
        text["batch"],
        providers,
    )
    if cfg.model.text.type not in PROMPT_BUILDERS:
        raise ExportFormatError(f"{folder}: unknown prompt builder {cfg.model.text.type!r}")
    weights_id = (
        f"onnx:{meta.get('text_graph_sha256', '')}" if meta.get("text_graph_sha256") else ""
    )
    encoder = PROMPT_BUILDERS.get(cfg.model.text.type)(cfg.model.text, tower, weights_id)
    host = ExportedFCCLIP(cfg, encoder, _task_token(folder, meta, cfg))
    return host, cfg, OnnxSeam(folder, meta["image_graphs"], providers)
