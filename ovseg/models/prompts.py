"""Trainable prompt options: modules that hold parameters, so they live in models.

* :class:`LearnablePromptEncoder` (``model.text.type: learnable``): CoOp-style learnable context
  vectors before each class name, fed through the frozen CLIP text tower (Zhou et al., IJCV
  2022); with ``separate_stuff_context`` one set for thing classes and one for stuff classes
  (OpenSD's decoupled prompt learning, Li et al., ICCV 2023). Gradients reach only the context.
* :class:`ContextDecoder` (``model.text.context_decoder: true``): DenseCLIP's context-aware
  prompting (Rao et al., CVPR 2022): per image, ``text + gamma * decoder(text, visual tokens)``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.config.schema import TextConfig
from ovseg.structures import TextClassifier
from ovseg.text.classifier import SYNONYM_COMBINATIONS, combine_synonyms
from ovseg.text.registry import PROMPT_BUILDERS
from ovseg.text.vocabulary import Vocabulary


class LearnablePromptEncoder(nn.Module):
    """Encodes vocabularies as ``[SOT] ctx_1 .. ctx_k <synonym> . [EOT]`` through the frozen text
    tower, one row per synonym (FC-CLIP's max over synonyms applies unchanged).

    Args:
        tower: the backbone (its :class:`TextTowerMixin` methods); kept out of this module's
            state so the frozen CLIP is not registered twice.
        tokenizer: open_clip tokenizer (``tokenizer(texts, context_length=L)``).
        num_context: learnable vectors k per set.
        separate_stuff: one set for thing classes, one for stuff classes (OpenSD).
        batch_size: prompts per forward pass.
        memory_entries: vocabularies kept in memory at inference (LRU).
        synonym_combination: "max" (a row per synonym) or "mean" (one row per class).
        init_std: the context vectors start as N(0, init_std^2) (CoOp).

    Attributes:
        context: (sets, k, W) the learnable vectors (set 0: things, set 1: stuff).
    """

    templates = ("{}.",)  # what a class name is wrapped in, after the context vectors

    def __init__(
        self,
        tower: Any,
        tokenizer: Callable[..., torch.Tensor],
        num_context: int = 8,
        separate_stuff: bool = True,
        batch_size: int = 256,
        memory_entries: int = 32,
        synonym_combination: str = "max",
        init_std: float = 0.02,
    ):
        super().__init__()
        if num_context < 1 or num_context >= tower.context_length - 2:
            raise ValueError(
                f"model.text.context_tokens must lie in [1, {tower.context_length - 3}]; "
                f"got {num_context}"
            )
        if synonym_combination not in SYNONYM_COMBINATIONS:
            raise ValueError(f"unknown synonym_combination {synonym_combination!r}")
        width = int(tower.clip_model.token_embedding.weight.shape[1])
        sets = 2 if separate_stuff else 1
        self.context = nn.Parameter(torch.randn(sets, num_context, width) * init_std)
        self._tower = (tower,)  # a tuple: not a submodule
        self.tokenizer = tokenizer
        self.num_context = num_context
        self.separate_stuff = separate_stuff
        self.batch_size = batch_size
        self.memory_entries = memory_entries
        self.synonym_combination = synonym_combination
        self._memory: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @property
    def tower(self) -> Any:
        return self._tower[0]

    def rows_per_class(self, vocabulary: Vocabulary) -> list[int]:
        if self.synonym_combination == "mean":
            return [1] * len(vocabulary)
        return vocabulary.num_synonyms

    def cache_key(self, vocabulary: Vocabulary) -> tuple:
        """(vocabulary, parameter version): an optimizer step or a loaded checkpoint changes the
        context in place, which bumps its version, so stale embeddings are never served."""
        h = hashlib.sha256("\x01".join(vocabulary.flat_synonyms()).encode())
        h.update(bytes(vocabulary.isthing))
        p = self.context
        return (h.hexdigest()[:24], p._version, p.data_ptr(), str(p.device), p.dtype)

    def forward(self, vocabulary: Vocabulary, device: torch.device | str = "cpu") -> TextClassifier:
        """The text classifier of ``vocabulary``. Training (grad enabled): computed afresh with
        gradients to :attr:`context`; otherwise cached per (vocabulary, parameter version)."""
        if vocabulary.descriptions:
            raise ValueError(
                "model.text.type=learnable does not use class descriptions; drop "
                "model.text.descriptions / --descriptions or use model.text.type=templates"
            )
        rows = self.rows_per_class(vocabulary)
        if self.training and torch.is_grad_enabled():
            emb = combine_synonyms(self.encode(vocabulary), vocabulary.num_synonyms,
                                   self.synonym_combination)  # fmt: skip
            return TextClassifier(emb.to(device), rows, vocabulary)
        key = self.cache_key(vocabulary)
        emb = self._memory.get(key)
        if emb is None:
            with torch.inference_mode(False), torch.no_grad():
                emb = combine_synonyms(self.encode(vocabulary), vocabulary.num_synonyms,
                                       self.synonym_combination)  # fmt: skip
        else:
            self._memory.move_to_end(key)
        self._memory[key] = emb
        while len(self._memory) > self.memory_entries:
            self._memory.popitem(last=False)
        return TextClassifier(emb.to(device), rows, vocabulary)

    def encode(self, vocabulary: Vocabulary) -> torch.Tensor:
        """(S, D) L2-normalised rows, one per synonym, class-major (with autograd)."""
        tower, k = self.tower, self.num_context
        synonyms = vocabulary.flat_synonyms()
        stuff = [int(self.separate_stuff and not c.isthing) for c in vocabulary for _ in c.synonyms]
        # Tokenised to leave room for the context (a long name is cut, end-of-text kept).
        tokens = self.tokenizer([self.templates[0].format(s) for s in synonyms],
                                context_length=tower.context_length - k)  # fmt: skip
        eot = tokens.argmax(dim=-1)
        sets = torch.tensor(stuff, dtype=torch.long)
        order = torch.argsort(eot, descending=True, stable=True)
        dev = self.context.device
        outs = []
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            length = int(eot[idx].max()) + 1  # the causal tower ignores what follows EOT
            x = tower.embed_tokens(tokens[idx, :length].to(dev))
            ctx = self.context.to(x.dtype)[sets[idx].to(dev)]
            x = torch.cat([x[:, :1], ctx, x[:, 1:]], dim=1)
            outs.append((idx, tower.encode_text_embeddings(x, eot[idx] + k).float()))
        # Back to class-major order by a gather (no in-place writes: autograd stays simple).
        feats = torch.cat([f for _, f in outs])
        perm = torch.cat([i for i, _ in outs]).to(dev)
        return F.normalize(feats[torch.argsort(perm)], dim=-1)


@PROMPT_BUILDERS.register("learnable")
def build_learnable_prompts(cfg: TextConfig, tower: Any, weights_id: str) -> LearnablePromptEncoder:
    """CoOp / OpenSD learnable context (``model.text.context_tokens``,
    ``model.text.separate_stuff_context``); the text tower stays frozen."""
    import open_clip

    return LearnablePromptEncoder(
        tower,
        open_clip.get_tokenizer(tower.name),
        num_context=cfg.context_tokens,
        separate_stuff=cfg.separate_stuff_context,
        batch_size=cfg.batch_size,
        memory_entries=cfg.memory_cache_size,
        synonym_combination=cfg.synonym_combination,
    )


class _Attention(nn.Module):
    """DenseCLIP's multi-head attention: bias-free q/k/v projections, output projection with
    dropout."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], h, c // h).transpose(1, 2)

        o = F.scaled_dot_product_attention(
            split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v))
        )
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(b, n, c)))


class _DecoderLayer(nn.Module):
    """Self-attention over the text -> cross-attention to the visual context -> MLP (x4, GELU)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.self_attn = _Attention(dim, heads, dropout)
        self.cross_attn = _Attention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim * 4), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * 4, dim)
        )

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        q = self.norm1(x)
        x = x + self.self_attn(q, q, q)
        x = x + self.cross_attn(self.norm2(x), mem, mem)
        return x + self.dropout(self.mlp(self.norm3(x)))


class ContextDecoder(nn.Module):
    """DenseCLIP's context-aware prompting (Rao et al., CVPR 2022): per image, the classifier
    rows attend to the frozen CLIP's visual tokens and move by ``gamma * decoder(...)``.

    Args:
        embed_dim: D, the CLIP embedding width (text and visual tokens).
        width, heads, layers, dropout: the decoder (DenseCLIP: 256, 4, 3, 0.1).
        gamma_init: initial value of the per-channel scale ``gamma`` (D,) (DenseCLIP: 1e-4); at
            0 the classifier is unchanged (up to renormalisation).
    """

    def __init__(
        self,
        embed_dim: int,
        width: int = 256,
        heads: int = 4,
        layers: int = 3,
        dropout: float = 0.1,
        gamma_init: float = 1e-4,
    ):
        super().__init__()
        if width % heads:
            raise ValueError(
                f"model.text.context_decoder_width={width} must be a multiple of "
                f"model.text.context_decoder_heads={heads}"
            )
        self.memory_proj = nn.Sequential(
            nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width), nn.LayerNorm(width)
        )
        self.text_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width))
        self.decoder = nn.ModuleList(_DecoderLayer(width, heads, dropout) for _ in range(layers))
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim))
        self.apply(self._init_weights)
        self.gamma = nn.Parameter(torch.full((embed_dim,), float(gamma_init)))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Refined, renormalised rows (B, S, D) of ``text`` (S, D) given ``visual`` (B, 1 + N, D)
        (global token first, then the dense tokens)."""
        b = visual.shape[0]
        mem = self.memory_proj(visual)
        t = text.to(mem.dtype)[None].expand(b, -1, -1)
        x = self.text_proj(t)
        for layer in self.decoder:
            x = layer(x, mem)
        return F.normalize(t + self.gamma.to(x.dtype) * self.out_proj(x), dim=-1)


def build_context_decoder(cfg: TextConfig, embed_dim: int) -> ContextDecoder | None:
    """``model.text.context_decoder`` (DenseCLIP) or None."""
    if not cfg.context_decoder:
        return None
    return ContextDecoder(
        embed_dim,
        width=cfg.context_decoder_width,
        heads=cfg.context_decoder_heads,
        layers=cfg.context_decoder_layers,
        dropout=cfg.context_decoder_dropout,
        gamma_init=cfg.context_decoder_gamma,
    )
