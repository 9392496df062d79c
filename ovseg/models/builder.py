"""Config -> modules. Modules take explicit keyword arguments; this is the only place that reads
the config schema (STYLE: explicit constructors + a builder)."""

from __future__ import annotations

import hashlib
import os

import open_clip

from ovseg.config.schema import ModelConfig
from ovseg.models.backbones import Backbone, select_backbone_class
from ovseg.models.backbones.clip import create_clip, register_clip_configs, register_config_file
from ovseg.models.backbones.clip_vit import CLIPViTBackbone
from ovseg.models.heads.transformer_decoder import MaskedTransformerDecoder
from ovseg.models.pixel_decoders.msdeform import MSDeformAttnPixelDecoder
from ovseg.models.segmentors.fcclip import FCCLIP
from ovseg.text.classifier import TextEncoder
from ovseg.text.templates import resolve_templates
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


def build_text_encoder(cfg: ModelConfig, backbone: Backbone) -> TextEncoder:
    register_clip_configs()
    tokenizer = open_clip.get_tokenizer(backbone.name)
    return TextEncoder(
        encode_tokens=backbone.encode_text,
        tokenizer=tokenizer,
        templates=resolve_templates(cfg.text.templates),
        weights_id=clip_weights_id(backbone) if cfg.text.disk_cache else "",
        context_length=backbone.context_length,
        batch_size=cfg.text.batch_size,
        disk_cache=cfg.text.disk_cache,
        encode_with_prefix=backbone.encode_text_with_prefix
        if backbone.supports_prefix_cache
        else None,
    )


def build_criterion(cfg: ModelConfig):
    from ovseg.models.losses import build_criterion as _build

    return _build(cfg.loss)


def build_model(cfg: ModelConfig, train_vocabulary: Vocabulary | None = None) -> FCCLIP:
    """Build FC-CLIP from the ``model`` section (CLIP weights per ``backbone.pretrained``)."""
    backbone = build_backbone(cfg)
    pd = cfg.pixel_decoder
    shapes = {k: v for k, v in backbone.output_shape().items() if k in pd.in_features}
    pixel_decoder = MSDeformAttnPixelDecoder(
        shapes,
        transformer_in_features=pd.transformer_in_features,
        conv_dim=pd.conv_dim,
        mask_dim=pd.mask_dim,
        norm=pd.norm,
        num_layers=pd.num_layers,
        num_heads=pd.num_heads,
        num_points=pd.num_points,
        dim_feedforward=pd.dim_feedforward,
        dropout=pd.dropout,
        common_stride=pd.common_stride,
        deform_attn_impl=pd.deform_attn_impl,
    )
    d = cfg.decoder
    predictor = MaskedTransformerDecoder(
        pd.conv_dim,
        hidden_dim=d.hidden_dim,
        num_queries=d.num_queries,
        num_heads=d.num_heads,
        dim_feedforward=d.dim_feedforward,
        num_layers=d.num_layers,
        pre_norm=d.pre_norm,
        mask_dim=pd.mask_dim,
        enforce_input_proj=d.enforce_input_proj,
        clip_embedding_dim=backbone.embed_dim,
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
        train_vocabulary=train_vocabulary,
        criterion=build_criterion(cfg),
    )
