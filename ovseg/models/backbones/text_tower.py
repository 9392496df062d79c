"""The CLIP text tower, shared by every backbone (one copy of the prompt-encoding code)."""

from __future__ import annotations

import torch
from torch import nn

from ovseg.models.ops.linear import linear


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

        Three savings, none of which changes what a prompt's end-of-text feature depends on
        (the tower is causal):

        - the prefix's hidden states are the same for every prompt: they are computed once and
          the rest attends to them (a key/value cache), instead of running every template's
          shared words once per class name;
        - the per-token layers (layer norms, projections, MLP: nearly all the work) run on the
          T real tokens of the batch packed into (T, W), never on the padding after each
          prompt's end-of-text; only attention sees the (N, Lr) layout;
        - the last block runs its queries, projection and MLP for the end-of-text tokens only,
          the one position per prompt that is read;
        - the linear layers run on oneDNN (:mod:`ovseg.models.ops.linear`) and attention is
          written out (:func:`_attention`): both faster on CPU for these shapes.
        """
        m = self.clip_model
        with torch.no_grad():
            n, lr = rest.shape
            lp = int(prefix.shape[0])
            cast = m.transformer.get_cast_dtype()
            pos = m.positional_embedding.to(cast)
            eot = rest.argmax(dim=-1)  # (N,) end-of-text is the largest token id
            real = torch.arange(lr, device=rest.device)[None] <= eot[:, None]  # (N, Lr)
            # Row of each prompt's end-of-text in the packed (T, W) layout.
            eot_row = real.sum(1).cumsum(0) - 1
            xp = m.token_embedding(prefix[None]).to(cast) + pos[:lp]
            x = (m.token_embedding(rest).to(cast) + pos[lp : lp + lr])[real]  # (T, W)
            causal = m.attn_mask[:lp, :lp].to(cast) if m.attn_mask is not None else None
            q_pos = torch.arange(lp, lp + lr, device=rest.device)[:, None]
            k_pos = torch.arange(lp + lr, device=rest.device)[None]
            rest_mask = torch.zeros((lr, lp + lr), dtype=cast, device=rest.device)
            rest_mask = rest_mask.masked_fill(k_pos > q_pos, float("-inf"))
            # The end-of-text query at rest position eot attends to keys up to lp + eot.
            eot_mask = torch.zeros((n, 1, 1, lp + lr), dtype=cast, device=rest.device)
            eot_mask = eot_mask.masked_fill((k_pos > lp + eot[:, None])[:, None, None], -torch.inf)
            blocks = list(m.transformer.resblocks)
            for i, blk in enumerate(blocks):
                last = i == len(blocks) - 1
                attn = blk.attn
                heads, e = attn.num_heads, attn.embed_dim
                dh = e // heads
                w, b = attn.in_proj_weight, attn.in_proj_bias

                def heads_first(t: torch.Tensor, heads: int = heads, dh: int = dh) -> torch.Tensor:
                    return t.reshape(t.shape[0], t.shape[1], heads, dh).transpose(1, 2)

                def padded(t: torch.Tensor, width: int = e) -> torch.Tensor:
                    """Packed (T, W) -> (N, Lr, W), zeros after each end-of-text (never
                    attended: the causal mask stops every query at its own position)."""
                    out = t.new_zeros(n, lr, width)
                    out[real] = t
                    return out

                # The shared prefix (one sequence): its keys/values are attended to by every
                # prompt, and it goes through the block itself for the next layer's.
                qp, kp, vp = (heads_first(t) for t in linear(blk.ln_1(xp), w, b).chunk(3, dim=-1))
                if not last:
                    op = _attention(qp, kp, vp, attn_mask=causal)
                    xp = xp + blk.ls_1(_out_proj(attn, op.transpose(1, 2).reshape(1, lp, e)))
                    xp = xp + blk.ls_2(_mlp(blk.mlp, blk.ln_2(xp)))
                h = blk.ln_1(x)
                k, v = (padded(t) for t in linear(h, w[e:], b[e:]).chunk(2, dim=-1))
                k = torch.cat([kp.expand(n, -1, -1, -1), heads_first(k)], dim=2)
                v = torch.cat([vp.expand(n, -1, -1, -1), heads_first(v)], dim=2)
                if last:
                    x = x[eot_row]  # (N, W): only the end-of-text tokens go on
                    q = linear(h[eot_row], w[:e], b[:e])
                    o = _attention(q.reshape(n, heads, 1, dh), k, v, attn_mask=eot_mask)
                    o = o.reshape(n, e)
                else:
                    q = padded(linear(h, w[:e], b[:e]))
                    o = _attention(heads_first(q), k, v, attn_mask=rest_mask)
                    o = o.transpose(1, 2)[real].reshape(-1, e)
                x = x + blk.ls_1(_out_proj(attn, o))
                x = x + blk.ls_2(_mlp(blk.mlp, blk.ln_2(x)))
            return self._project(m.ln_final(x))


def _out_proj(attn: nn.MultiheadAttention, o: torch.Tensor) -> torch.Tensor:
    return linear(o, attn.out_proj.weight, attn.out_proj.bias)


def _mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's MLP (``c_fc``, activation, ``c_proj``) with its linear layers on
    :func:`ovseg.models.ops.linear.linear`."""
    for layer in mlp.children():
        x = linear(x, layer.weight, layer.bias) if isinstance(layer, nn.Linear) else layer(x)
    return x


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None
) -> torch.Tensor:
    """Scaled dot-product attention written out: q (..., Lq, d), k / v (..., Lk, d), additive
    mask broadcastable to (..., Lq, Lk). For a prompt's few tokens this is ~2x faster on CPU
    than ``F.scaled_dot_product_attention``'s flash kernel (same values to float rounding)."""
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
    if attn_mask is not None:
        scores = scores.add_(attn_mask)
    return torch.matmul(scores.softmax(-1), v)
