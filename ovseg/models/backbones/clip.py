"""The frozen open_clip model: multi-scale image features, dense CLIP embeddings, text tower.

Frozen means: parameters never require grad, the module stays in eval mode even under
``model.train()`` (BatchNorm of ResNet CLIPs uses running statistics), it runs without autograd,
and the optimizer never sees it. Output channels are read from the built model, never matched
from its name (FC-CLIP hard-codes them by substring).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from ovseg.structures import ShapeSpec

logger = logging.getLogger(__name__)

CLIP_CONFIG_DIR = Path(__file__).parent / "clip_configs"
_registered = False


def register_clip_configs() -> None:
    """Make ovseg's own open_clip model configs (tiny test architectures) known to open_clip."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CLIP_CONFIG_DIR)
        _registered = True


def create_clip(
    name: str, pretrained: str | None, force_quick_gelu: bool = False, cache_dir: str | None = None
) -> nn.Module:
    """Build an open_clip model by name.

    Args:
        name: an open_clip model name (``convnext_large_d_320``, ``RN50``, or a config registered
            with ``open_clip.add_model_config``).
        pretrained: an open_clip pretrained tag (downloaded into open_clip's cache), a local
            weights file, or None for random initialisation.
    """
    register_clip_configs()
    if name not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
        raise ValueError(
            f"unknown open_clip model {name!r}" + (f"; did you mean {close}?" if close else "")
        )
    if pretrained:
        is_file = os.path.isfile(pretrained)
        if not is_file and pretrained not in open_clip.list_pretrained_tags_by_model(name):
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ValueError(
                f"model.backbone.pretrained={pretrained!r} is neither a file nor an open_clip tag of "
                f"{name!r} (tags: {tags or 'none'}); use null for random weights"
            )
        if not is_file:
            logger.info(
                "CLIP weights %s/%s come from open_clip's cache (%s)",
                name,
                pretrained,
                cache_dir
                or os.environ.get("HF_HUB_CACHE", "~/.cache/huggingface or ~/.cache/clip"),
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger().disabled, was = True, logging.getLogger().disabled
        try:
            model = open_clip.create_model(
                name,
                pretrained=pretrained or None,
                force_quick_gelu=force_quick_gelu,
                cache_dir=cache_dir,
            )
        finally:
            logging.getLogger().disabled = was
    return model


class CLIPBackbone(nn.Module):
    """Wraps a frozen open_clip model (ConvNeXt or ModifiedResNet image tower).

    Args:
        clip_model: the open_clip model (its weights are stored under ``clip_model.``).
        name, pretrained: what built it, recorded in checkpoints so the weights can be re-fetched.

    ``forward(x)`` takes a normalised (B, 3, H, W) float image and returns res2..res5
    (strides 4..32) and ``clip_vis_dense`` (the stride-32 map the out-of-vocabulary branch pools).
    """

    def __init__(self, clip_model: nn.Module, name: str = "", pretrained: str | None = None):
        super().__init__()
        self.clip_model = clip_model
        self.name = name
        self.pretrained = pretrained
        visual = clip_model.visual
        if hasattr(visual, "trunk") and hasattr(visual.trunk, "stages"):
            self.model_type = "convnext"
            info = visual.trunk.feature_info
            channels = [int(f["num_chs"]) for f in info[-4:]]
        elif hasattr(visual, "layer4") and hasattr(visual, "attnpool"):
            self.model_type = "resnet"
            channels = [
                int(getattr(visual, f"layer{k}")[-1].conv3.out_channels) for k in range(1, 5)
            ]
        else:
            raise ValueError(
                f"unsupported CLIP image tower {type(visual).__name__}: ovseg needs a timm ConvNeXt "
                "trunk or open_clip's ModifiedResNet (RN50, RN101, RN50x4, ...)"
            )
        self._shapes = {f"res{i + 2}": ShapeSpec(c, 2 ** (i + 2)) for i, c in enumerate(channels)}
        self.embed_dim = int(clip_model.text_projection.shape[-1])
        self.requires_grad_(False)
        self.eval()

    # ------------------------------------------------------------------ contracts
    def output_shape(self) -> dict[str, ShapeSpec]:
        """res2..res5 -> (channels, stride), read from the built model."""
        return dict(self._shapes)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip_model.logit_scale

    def train(self, mode: bool = True) -> CLIPBackbone:
        # Frozen: always eval, whatever the parent does.
        return super().train(False)

    # ------------------------------------------------------------------ image tower
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            if self.model_type == "convnext":
                return self._features_convnext(x)
            return self._features_resnet(x)

    def _features_convnext(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        trunk = self.clip_model.visual.trunk
        out = {}
        x = trunk.stem(x)
        for i in range(4):
            x = trunk.stages[i](x)
            out[f"res{i + 2}"] = x
        out["clip_vis_dense"] = trunk.norm_pre(x)
        return out

    def _features_resnet(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        v = self.clip_model.visual
        x = v.act1(v.bn1(v.conv1(x)))
        x = v.act2(v.bn2(v.conv2(x)))
        x = v.act3(v.bn3(v.conv3(x)))
        x = v.avgpool(x)
        out = {}
        for k in range(1, 5):
            x = getattr(v, f"layer{k}")(x)
            out[f"res{k + 1}"] = x
        out["clip_vis_dense"] = x
        return out

    def pool_masks(self, dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """CLIP embedding of each mask region, for the out-of-vocabulary classifier.

        Args:
            dense: (B, C, h, w) ``clip_vis_dense``.
            masks: (B, Q, h, w) mask logits on the same grid (> 0 = inside).

        Returns:
            (B, Q, D) embeddings in the text space. ConvNeXt: mean-pool, then the CLIP head.
            ResNet: attention pooling with the CLIP ``attnpool`` weights, keys restricted to the
            mask (FC-CLIP's ``visual_prediction_forward_resnet``).
        """
        with torch.no_grad():
            if self.model_type == "convnext":
                from ovseg.models.heads.transformer_decoder import mask_pooling

                pooled = mask_pooling(dense, masks)
                b, q, c = pooled.shape
                x = self.clip_model.visual.trunk.head(pooled.reshape(b * q, c, 1, 1))
                x = self.clip_model.visual.head(x)
                return x.view(b, q, -1)
            return self._attnpool_masks(dense, masks)

    def _attnpool_masks(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        pool = self.clip_model.visual.attnpool
        b, c, h, w = x.shape
        q = masks.shape[1]
        pos = pool.positional_embedding.to(x.dtype)
        g = int(round((pos.shape[0] - 1) ** 0.5))
        spatial = pos[1:].T.reshape(1, c, g, g)
        spatial = F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=False)
        spatial = spatial.permute(2, 3, 0, 1).reshape(h * w, 1, c)
        tokens = x.reshape(b, c, h * w).permute(2, 0, 1)  # (HW, B, C)
        key_value = tokens + spatial
        query = (tokens.mean(0, keepdim=True) + pos[:1, None, :]).repeat_interleave(q, dim=0)
        blocked = (masks.reshape(b, q, h * w) > 0).logical_not()
        attn_mask = (
            blocked.unsqueeze(1)
            .expand(-1, pool.num_heads, -1, -1)
            .reshape(b * pool.num_heads, q, h * w)
        )
        out = F.multi_head_attention_forward(
            query=query,
            key=key_value,
            value=key_value,
            embed_dim_to_check=c,
            num_heads=pool.num_heads,
            q_proj_weight=pool.q_proj.weight,
            k_proj_weight=pool.k_proj.weight,
            v_proj_weight=pool.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0.0,
            out_proj_weight=pool.c_proj.weight,
            out_proj_bias=pool.c_proj.bias,
            use_separate_proj_weight=True,
            training=False,
            need_weights=False,
            attn_mask=attn_mask,
        )[0]
        return out.permute(1, 0, 2)

    # ------------------------------------------------------------------ text tower
    @property
    def context_length(self) -> int:
        return int(self.clip_model.positional_embedding.shape[0])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Un-normalised text features (N, D) of tokenised prompts (N, L), L <= context length.

        The tower is causal, so the end-of-text feature does not depend on the padding after it:
        callers may cut ``tokens`` to the longest prompt of a batch (same numbers, less work).
        """
        m = self.clip_model
        with torch.no_grad():
            n, length = tokens.shape
            cast = m.transformer.get_cast_dtype()
            x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:length].to(cast)
            attn = m.attn_mask[:length, :length] if m.attn_mask is not None else None
            x = m.transformer(x, attn_mask=attn)
            x = m.ln_final(x)
            x = x[torch.arange(n, device=x.device), tokens.argmax(dim=-1)]
            return self._project(x)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.clip_model.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    @property
    def supports_prefix_cache(self) -> bool:
        """Whether :meth:`encode_text_with_prefix` applies (open_clip's batch-first text tower
        made of standard residual attention blocks)."""
        t = getattr(self.clip_model, "transformer", None)
        blocks = getattr(t, "resblocks", None)
        return (
            bool(getattr(t, "batch_first", False))
            and blocks is not None
            and all(
                hasattr(b, "attn") and hasattr(b, "ln_1") and not hasattr(b, "ln_1_kv")
                for b in blocks
            )
        )

    def encode_text_with_prefix(self, prefix: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        """:meth:`encode_text` of prompts that all start with the same tokens ``prefix`` (Lp,)
        followed by ``rest`` (N, Lr), end-of-text inside ``rest``.

        The tower is causal, so the prefix's hidden states are the same for every prompt: they
        are computed once and the rest attends to them (a key/value cache), instead of running
        every template's shared words once per class name.
        """
        m = self.clip_model
        with torch.no_grad():
            n, lr = rest.shape
            lp = int(prefix.shape[0])
            cast = m.transformer.get_cast_dtype()
            pos = m.positional_embedding.to(cast)
            xp = m.token_embedding(prefix[None]).to(cast) + pos[:lp]
            xr = m.token_embedding(rest).to(cast) + pos[lp : lp + lr]
            causal = m.attn_mask[:lp, :lp].to(cast) if m.attn_mask is not None else None
            q_pos = torch.arange(lp, lp + lr, device=rest.device)[:, None]
            k_pos = torch.arange(lp + lr, device=rest.device)[None]
            rest_mask = torch.zeros((lr, lp + lr), dtype=cast, device=rest.device)
            rest_mask = rest_mask.masked_fill(k_pos > q_pos, float("-inf"))
            for blk in m.transformer.resblocks:
                attn = blk.attn
                heads, e = attn.num_heads, attn.embed_dim
                dh = e // heads
                w, b = attn.in_proj_weight, attn.in_proj_bias
                # Keys/values of the shared prefix: computed once, attended to by every prompt.
                kp, vp = F.linear(blk.ln_1(xp), w[e:], b[e:]).chunk(2, dim=-1)
                q, k, v = F.linear(blk.ln_1(xr), w, b).chunk(3, dim=-1)

                def heads_first(t: torch.Tensor, heads: int = heads, dh: int = dh) -> torch.Tensor:
                    return t.reshape(t.shape[0], t.shape[1], heads, dh).transpose(1, 2)

                k = torch.cat([heads_first(kp).expand(n, -1, -1, -1), heads_first(k)], dim=2)
                v = torch.cat([heads_first(vp).expand(n, -1, -1, -1), heads_first(v)], dim=2)
                o = F.scaled_dot_product_attention(heads_first(q), k, v, attn_mask=rest_mask)
                o = attn.out_proj(o.transpose(1, 2).reshape(n, lr, e))
                xr = xr + blk.ls_1(o)
                xr = xr + blk.ls_2(blk.mlp(blk.ln_2(xr)))
                xp = blk(xp, attn_mask=causal)
            x = m.ln_final(xr)
            x = x[torch.arange(n, device=x.device), rest.argmax(dim=-1)]
            return self._project(x)
