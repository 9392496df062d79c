"""Typed config schema. YAML files are merged onto these dataclasses (see loader.py).

Field names follow FC-CLIP/Mask2Former where a user of those would look for them; the docstring
of each field's module says what the field means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, List, Optional, Union

from ovseg.config.data import DataConfig
from ovseg.config.engine import OptimConfig, RuntimeConfig, ScheduleConfig
from ovseg.config.loader import ConfigError
from ovseg.config.loss import LossConfig

CLIP_MEAN_255 = [122.7709383, 116.7460125, 104.09373615]
CLIP_STD_255 = [68.5005327, 66.6321579, 70.32316305]
TEST_MODES = ("whole", "slide")


@dataclass
class BackboneConfig:
    """Frozen open_clip model.

    ``pretrained``: an open_clip pretrained tag (e.g. ``laion2b_s29b_b131k_ft_soup``, downloaded
    by open_clip into its own cache), a local weights file, or null (random init, for tests).
    ``type``: a registered backbone (``clip_convnext``, ``clip_resnet``, ``clip_vit``) or ``auto`` (chosen by
    the built image tower's class). ``config_file``: an open_clip model-config JSON (resolved
    against the cwd, or absolute), registered with open_clip under its file-name stem before
    building; ``name`` may then be that stem or null.
    """

    type: str = "auto"
    name: Optional[str] = "convnext_large_d_320"
    pretrained: Optional[str] = "laion2b_s29b_b131k_ft_soup"
    force_quick_gelu: bool = False
    cache_dir: Optional[str] = None
    config_file: Optional[str] = None
    pyramid_channels: int = 256  # clip_vit only: channels of its trainable res2..res5 pyramid


@dataclass
class PixelDecoderConfig:
    """Multi-scale deformable-attention pixel decoder (Mask2Former)."""

    type: str = "msdeform"  # a registered pixel decoder (ovseg.models.registry.PIXEL_DECODERS)

    conv_dim: int = 256
    mask_dim: int = 256
    norm: str = "GN"
    in_features: List[str] = field(default_factory=lambda: ["res2", "res3", "res4", "res5"])
    transformer_in_features: List[str] = field(default_factory=lambda: ["res3", "res4", "res5"])
    num_layers: int = 6
    num_heads: int = 8
    num_points: int = 4
    dim_feedforward: int = 1024
    dropout: float = 0.0
    common_stride: int = 4
    # "auto" (default: "gather" for CPU inference, "grid_sample" when gradients flow or on
    # CUDA), "grid_sample" (the reference), "gather" (grid_sample's arithmetic by
    # channel-contiguous row gathers: the same inference outputs on CPU, ~1.5x faster; its
    # backward accumulates in another order, so training trajectories differ) or
    # "embedding_bag" (fastest on CPU, equal up to float rounding; part of the fast mode)
    deform_attn_impl: str = "auto"
    # Training only: recompute each deformable encoder layer in backward instead of keeping its
    # activations (torch.utils.checkpoint). The same gradients, bitwise on CPU; at 1024x1024 the
    # encoder's ~3 GB of saved tensors go, for one more encoder forward per step. An integer N
    # recomputes the first N layers only (memory and time in between; true = all).
    activation_checkpointing: Union[bool, int] = False  # noqa: UP007 (OmegaConf needs Union)


@dataclass
class TransformerDecoderConfig:
    """Masked-attention transformer decoder. ``num_layers`` = FC-CLIP's DEC_LAYERS - 1."""

    type: str = "masked_attention"  # ovseg.models.registry.TRANSFORMER_DECODERS

    hidden_dim: int = 256
    num_queries: int = 250
    num_heads: int = 8
    dim_feedforward: int = 2048
    num_layers: int = 9
    pre_norm: bool = False
    enforce_input_proj: bool = False
    # type=decoupled (OpenSD): the first num_thing_queries queries match thing targets only, the
    # other num_stuff_queries stuff targets only; their sum must be num_queries.
    num_thing_queries: int = 0
    num_stuff_queries: int = 0

    # OneFormer's task token (docs/oneformer.md): per training image a task is drawn with
    # task_probs (semantic, instance, panoptic), its targets built for that task, and the frozen
    # CLIP text embedding of "the task is {task}" (through a learnt 2-layer MLP) is added to the
    # initial queries; at test time the requested task picks the token ("all": panoptic).
    task_conditioning: bool = False
    task_probs: List[float] = field(default_factory=lambda: [1 / 3, 1 / 3, 1 / 3])

    def __post_init__(self) -> None:
        probs = list(self.task_probs)
        if len(probs) != 3 or any(p < 0 for p in probs) or not 0.999 < sum(probs) < 1.001:
            raise ConfigError(
                "model.decoder.task_probs must be three probabilities (semantic, instance, "
                f"panoptic) >= 0 summing to 1; got {probs!r}"
            )


MAX_TEMPLATES = 1000  # prompts per synonym; FC-CLIP's ViLD set has 14


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class TextConfig:
    """Text classifier: prompt templates x synonyms through the frozen text tower."""

    type: str = "templates"  # a registered prompt builder (ovseg.text.registry.PROMPT_BUILDERS)

    # A built-in template set name (ovseg.text.templates.TEMPLATE_SETS) or "... {} ..." strings.
    templates: Union[str, List[str]] = "vild"  # noqa: UP007 (OmegaConf needs typing.Union)
    batch_size: int = 256
    disk_cache: bool = True  # cache embeddings under $OVSEG_HOME/text_embeddings
    memory_cache_size: int = 32  # vocabularies kept in memory (LRU)
    train_vocabulary: Optional[str] = "coco-panoptic"  # classes sharing a synonym are "seen"
    # Class descriptions (CuPL / AttrSeg): a JSON file {"<class name>": ["sentence", ...]},
    # keyed by canonical names, applied at inference to every vocabulary the Segmenter resolves.
    descriptions: Optional[str] = None
    description_mode: str = "replace"  # "replace": one row of sentences; "both": CuPL's ensemble
    synonym_combination: str = "max"  # "max" over a class's synonym logits (FC-CLIP) or "mean"
    # type=learnable (CoOp / OpenSD): learnable vectors before the class name in the frozen
    # text tower, one set for thing and one for stuff classes unless separate_stuff_context=false
    context_tokens: int = 8
    separate_stuff_context: bool = True
    # DenseCLIP's context-aware prompting: per image, text += gamma * ContextDecoder(text,
    # [global; dense] CLIP tokens), fed to the in-vocabulary head (trainable).
    context_decoder: bool = False
    context_decoder_width: int = 256
    context_decoder_heads: int = 4
    context_decoder_layers: int = 3
    context_decoder_dropout: float = 0.1
    context_decoder_gamma: float = 1e-4  # initial per-channel gamma

    def __post_init__(self) -> None:
        t = self.templates
        if not isinstance(t, str) and not (
            0 < len(t) <= MAX_TEMPLATES and all(isinstance(x, str) and "{}" in x for x in t)
        ):
            raise ConfigError(
                "model.text.templates must be a template set name or a list of 1 to "
                f"{MAX_TEMPLATES} strings each with a '{{}}' placeholder; got {_short(t)}"
            )
        for key, allowed in (
            ("description_mode", ("replace", "both")),
            ("synonym_combination", ("max", "mean")),
        ):
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"model.text.{key} must be one of {', '.join(map(repr, allowed))}; "
                    f"got {getattr(self, key)!r}"
                )


@dataclass
class TestConfig:
    """Inference: resize, ensemble and post-processing (FC-CLIP defaults)."""

    min_size: int = 800
    max_size: int = 1333
    size_divisibility: int = 32
    vocabulary: Optional[str] = "ade20k-150"  # default vocabulary (built-in name or file)
    geometric_ensemble_alpha: float = 0.4
    geometric_ensemble_beta: float = 0.8
    ensemble_on_valid_mask: bool = False
    object_mask_threshold: float = 0.0
    overlap_threshold: float = 0.8
    detections_per_image: int = 100
    task: str = "panoptic"
    # Bounded memory on large images: above this many C x H x W semantic scores, ``sem_seg``
    # is kept at a reduced size and the full-resolution argmax is computed band by band
    # (Prediction.sem_seg_labels); 0 = always full. Default 2**26 (256 MB of float32).
    max_score_elements: int = 1 << 26
    # Larger images are post-processed at this many pixels (aspect kept) and their label maps,
    # ids and masks upsampled nearest to the image (0 = always at full size). Default 2048 x
    # 1024 (Cityscapes, Full HD and smaller run FC-CLIP's post-processing exactly).
    max_postprocess_pixels: int = 2048 * 1024
    # Images with more pixels are refused before they are decoded (0 = no limit).
    max_image_pixels: int = 100_000_000
    # "fp32" (exact, default), or "bf16" / "fp16": autocast for the image tower and decoders
    # (opt-in fast mode; its measured deviation is in the README). Classifiers, ensemble and
    # post-processing always run in fp32. "auto": bf16 where the device computes it natively
    # (CPUs with AVX512-BF16 or AMX, recent GPUs), fp16 on other GPUs, else fp32; an emulated
    # reduced precision (slower than fp32) warns (ovseg/utils/precision.py).
    precision: str = "fp32"
    # "whole" (FC-CLIP, default): one pass over the resized image. "slide": windows of
    # crop_size [h, w] every stride [h, w] over the resized image, their semantic scores averaged
    # where they overlap (mmseg's slide_inference; semantic task only). Defaults: mmseg's ADE20K
    # 640 setting. See ovseg/inference/sliding.py.
    mode: str = "whole"
    crop_size: List[int] = field(default_factory=lambda: [640, 640])
    stride: List[int] = field(default_factory=lambda: [426, 426])

    def __post_init__(self) -> None:
        self.check_mode()

    def check_task(self, tasks: str | Sequence[str], asked: str = "task={!r}") -> None:
        """Raise ConfigError unless the test mode can compute ``tasks``: the one check of mode
        vs task (Segmenter, tools/test.py, the demo and the evaluation runner call it).

        Averaging per-pixel class scores merges windows; panoptic segments and instances cut by
        a window border do not merge that way (mmseg slides for the semantic task only).

        Args:
            tasks: a task name or the tasks asked for.
            asked: how the caller's user asked, for the message (``"--task {}"``).
        """
        self.check_mode()
        names = [tasks] if isinstance(tasks, str) else list(tasks)
        if self.mode == "slide" and any(t != "semantic" for t in names):
            shown = asked.format(tasks if isinstance(tasks, str) else ", ".join(names))
            raise ConfigError(
                f"model.test.mode=slide (sliding windows) computes the semantic task only; "
                f"got {shown}: ask for the semantic task, or use model.test.mode=whole"
            )

    def check_mode(self) -> None:
        """Raise ConfigError naming the key if ``mode`` / ``crop_size`` / ``stride`` are invalid
        (also called at predict time: configs can be edited after loading)."""
        if self.mode not in TEST_MODES:
            allowed = ", ".join(map(repr, TEST_MODES))
            raise ConfigError(f"model.test.mode must be one of {allowed}; got {self.mode!r}")
        for key in ("crop_size", "stride"):
            value = list(getattr(self, key))
            if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
                raise ConfigError(
                    f"model.test.{key} must be two positive integers [h, w]; got {value!r}"
                )
        if any(s > c for s, c in zip(self.stride, self.crop_size)):
            raise ConfigError(
                f"model.test.stride {list(self.stride)} must not exceed model.test.crop_size "
                f"{list(self.crop_size)} along either axis: the windows would leave gaps"
            )


@dataclass
class ModelConfig:
    type: str = "fcclip"  # a registered segmentor (ovseg.models.registry.SEGMENTORS)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    decoder: TransformerDecoderConfig = field(default_factory=TransformerDecoderConfig)
    text: TextConfig = field(default_factory=TextConfig)
    test: TestConfig = field(default_factory=TestConfig)
    pixel_mean: List[float] = field(default_factory=lambda: list(CLIP_MEAN_255))
    pixel_std: List[float] = field(default_factory=lambda: list(CLIP_STD_255))
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass
class Config:
    """The whole experiment: model, data, optimisation, schedule, runtime."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
