"""Config -> modules. Modules take explicit keyword arguments; this is the only place that reads
the config schema (STYLE: explicit constructors + a builder)."""

from __future__ import annotations

import hashlib
import inspect
import os

from ovseg.config.schema import ModelConfig
from ovseg.models import heads, losses, pixel_decoders, prompts  # noqa: F401 (registration)
from ovseg.models.backbones import Backbone, select_backbone_class
from ovseg.models.backbones.clip import create_clip, register_clip_configs, register_config_file
from ovseg.models.backbones.clip_vit import CLIPViTBackbone
from ovseg.models.oneformer import build_oneformer_head
from ovseg.models.registry import LOSSES, PIXEL_DECODERS, SEGMENTORS, TRANSFORMER_DECODERS
from ovseg.models.segmentors.fcclip import FCCLIP
from ovseg.text import classifier  # noqa: F401 (registers the built-in prompt builders)
from ovseg.text.registry import PROMPT_BUILDERS
from ovseg.text.vocabulary import Vocabulary, resolve_vocabulary


def build_backbone(cfg: ModelConfig) -> Backbone:
    """The registered backbone ``model.backbone.type`` (\"auto\": by the built tower's class)."""
    b = cfg.backbone
    name = b.name
    if b.config_file:
        stem = register_config_file(b.config_file)
        if name and name != stem:
            raise ValueError(
                f"model.backbone.name={name!r} differs from config_file's stem {stem!r}; "
                "set name to the stem or null"
            )
        name = stem
    if not name:
        raise ValueError(
            "model.backbone.name is empty; give an open_clip model name or config_file"
        )
    clip = create_clip(
        name, b.pretrained, force_quick_gelu=b.force_quick_gelu, cache_dir=b.cache_dir
    )
    cls = select_backbone_class(b.type, clip.visual)
    extra = {"pyramid_channels": b.pyramid_channels} if cls is CLIPViTBackbone else {}
    return cls(clip, name=name, pretrained=b.pretrained, **extra)


def clip_weights_id(backbone: Backbone) -> str:
    """Identifies the text tower's weights for the on-disk embedding cache."""
    p = backbone.pretrained
    if p and not os.path.isfile(p):
        return f"{backbone.name}/{p}"
    m = backbone.clip_model
    h = hashlib.sha256(backbone.name.encode())
    for t in (
        m.positional_embedding,
        m.ln_final.weight,
        m.ln_final.bias,
        m.text_projection,
        m.token_embedding.weight[:512],
    ):
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def build_text_encoder(cfg: ModelConfig, backbone: Backbone):
    """The registered prompt builder ``model.text.type`` over the backbone's text tower."""
    register_clip_configs()
    builder = PROMPT_BUILDERS.get(cfg.text.type)
    weights_id = clip_weights_id(backbone) if cfg.text.disk_cache else ""
    return builder(cfg.text, backbone, weights_id)


def build_criterion(cfg: ModelConfig, embed_dim: int | None = None):
    """The registered loss ``model.loss.type`` (given the text-embedding width ``embed_dim``
    when its builder takes one: losses with their own projections, e.g. GKC's)."""
    builder = LOSSES.get(cfg.loss.type)
    if embed_dim is not None and "embed_dim" in inspect.signature(builder).parameters:
        return builder(cfg.loss, embed_dim=embed_dim)
    return builder(cfg.loss)


def build_model(cfg: ModelConfig, train_vocabulary: Vocabulary | None = None):
    """The registered segmentor ``model.type`` (default FC-CLIP) from the ``model`` section
    (CLIP weights per ``backbone.pretrained``)."""
    return SEGMENTORS.get(cfg.type)(cfg, train_vocabulary)


@SEGMENTORS.register("fcclip")
def build_fcclip(cfg: ModelConfig, train_vocabulary: Vocabulary | None = None) -> FCCLIP:
    """FC-CLIP: each part is the registered ``type`` of its config section."""
    backbone = build_backbone(cfg)
    pd = cfg.pixel_decoder
    pixel_decoder = PIXEL_DECODERS.get(pd.type)(pd, backbone.output_shape())
    predictor = TRANSFORMER_DECODERS.get(cfg.decoder.type)(
        cfg.decoder, in_channels=pd.conv_dim, mask_dim=pd.mask_dim, embed_dim=backbone.embed_dim
    )
    t = cfg.test
    if train_vocabulary is None and cfg.text.train_vocabulary:
        train_vocabulary = resolve_vocabulary(cfg.text.train_vocabulary)
    return FCCLIP(
        backbone=backbone,
        pixel_decoder=pixel_decoder,
        predictor=predictor,
        text_encoder=build_text_encoder(cfg, backbone),
        pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std,
        size_divisibility=t.size_divisibility,
        geometric_ensemble_alpha=t.geometric_ensemble_alpha,
        geometric_ensemble_beta=t.geometric_ensemble_beta,
        ensemble_on_valid_mask=t.ensemble_on_valid_mask,
        object_mask_threshold=t.object_mask_threshold,
        overlap_threshold=t.overlap_threshold,
        detections_per_image=t.detections_per_image,
        max_score_elements=t.max_score_elements,
        max_postprocess_pixels=t.max_postprocess_pixels,
        train_vocabulary=train_vocabulary,
        criterion=build_criterion(cfg, backbone.embed_dim),
        context_decoder=prompts.build_context_decoder(cfg.text, backbone.embed_dim),
        oneformer=build_oneformer_head(cfg, backbone),
    )
