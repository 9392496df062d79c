"""The CLIP text tower, shared by every backbone (one copy of the prompt-encoding code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextTowerMixin:
    """Text encoding on ``self.clip_model`` (an open_clip ``CLIP``): tokens (N, L) -> (N, D)."""

    clip_model: nn.Module

    @property
    def context_length(self) -> int:
        return int(self.clip_model.positional_embedding.shape[0])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Un-normalised text features (N, D) of tokenised prompts (N, L), L <= context length.

        The tower is causal, so the end-of-text feature does not depend on the padding after it:
        callers may cut ``tokens`` to the longest prompt of a batch (same numbers, less work).
        """
        with torch.no_grad():
            return self.encode_text_embeddings(self.embed_tokens(tokens), tokens.argmax(dim=-1))

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings (N, L, W) of tokens (N, L), in the tower's compute dtype."""
        m = self.clip_model
        return m.token_embedding(tokens).to(m.transformer.get_cast_dtype())

    def encode_text_embeddings(self, x: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """Text features (N, D) of token embeddings ``x`` (N, L, W) (positions are added here),
        read at ``eot_index`` (N,). No ``no_grad``: learnable prompt vectors placed in ``x``
        receive gradients through the frozen tower (CoOp)."""
        m = self.clip_model
        n, length = x.shape[:2]
        x = x + m.positional_embedding[:length].to(x.dtype)
        attn = m.attn_mask[:length, :length] if m.attn_mask is not None else None
        x = m.transformer(x, attn_mask=attn)
        x = m.ln_final(x)
        x = x[torch.arange(n, device=x.device), eot_index.to(x.device)]
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
