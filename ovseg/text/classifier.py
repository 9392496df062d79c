"""The text classifier: one normalised embedding per class synonym, computed once and cached.

Per synonym: every template is filled in, tokenised, encoded by the frozen text tower; each
prompt feature is L2-normalised, averaged over templates and normalised again (FC-CLIP). Prompts
are encoded in batches cut to the longest prompt of the batch (the causal tower makes the
end-of-text feature independent of trailing padding), sorted by length so batches are tight.
Results are cached in memory per (CLIP weights, templates, vocabulary) and optionally on disk
under ``$OVSEG_HOME/text_embeddings``.

Options (``model.text``): classes that carry description sentences (CuPL; see
:meth:`Vocabulary.with_descriptions`) get ``norm(mean_i norm(enc(sentence_i)))`` as their one row
(``description_mode: replace``), or each synonym row averages its template prompts together with
the sentences (``both``, CuPL's ensemble). ``synonym_combination: mean`` gives each class one row,
the mean of its synonym rows, so its logit is the mean of the synonym logits (FC-CLIP: ``max``).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ovseg.config.schema import TextConfig
from ovseg.structures import TextClassifier
from ovseg.text.registry import PROMPT_BUILDERS
from ovseg.text.templates import resolve_templates
from ovseg.text.vocabulary import Vocabulary
from ovseg.utils.io import atomic_write
from ovseg.utils.paths import ovseg_home

logger = logging.getLogger(__name__)

DESCRIPTION_MODES = ("replace", "both")
SYNONYM_COMBINATIONS = ("max", "mean")


def combine_synonyms(emb: torch.Tensor, rows: Sequence[int], how: str) -> torch.Tensor:
    """``how="mean"``: each class's rows (``rows`` per class) -> their mean, one row per class
    (not renormalised: its cosine logit is then exactly the mean of the synonym logits);
    ``"max"``: unchanged (the classifier takes the max over a class's rows)."""
    if how == "max":
        return emb
    return torch.stack([g.mean(0) for g in emb.split(list(rows))])


class TextEncoder:
    """Encodes vocabularies with a CLIP text tower; caches results.

    Args:
        encode_tokens: maps int64 tokens (N, L) to un-normalised features (N, D).
        tokenizer: open_clip tokenizer (returns (N, context_length) int64).
        templates: prompt templates.
        weights_id: identifies the CLIP weights (part of the cache key).
        batch_size: prompts per forward pass.
        disk_cache: also store embeddings under ``$OVSEG_HOME/text_embeddings``.
        memory_entries: vocabularies kept in memory (least recently used dropped first), so a
            long-running server with free-text vocabularies stays bounded.
        description_mode: how a class's description sentences enter (see the module doc).
        synonym_combination: "max" (FC-CLIP: a row per synonym, max of their logits) or
            "mean" (one row per class, the mean of its synonym rows).
    """

    def __init__(
        self,
        encode_tokens: Callable[[torch.Tensor], torch.Tensor],
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        templates: Sequence[str],
        weights_id: str,
        context_length: int = 77,
        batch_size: int = 256,
        disk_cache: bool = False,
        encode_with_prefix: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        memory_entries: int = 32,
        description_mode: str = "replace",
        synonym_combination: str = "max",
    ):
        if description_mode not in DESCRIPTION_MODES:
            raise ValueError(
                f"model.text.description_mode must be one of {DESCRIPTION_MODES}; "
                f"got {description_mode!r}"
            )
        if synonym_combination not in SYNONYM_COMBINATIONS:
            raise ValueError(
                f"model.text.synonym_combination must be one of {SYNONYM_COMBINATIONS}; "
                f"got {synonym_combination!r}"
            )
        self.description_mode = description_mode
        self.synonym_combination = synonym_combination
        self.encode_tokens = encode_tokens
        self.tokenizer = tokenizer
        self.templates = tuple(templates)
        self.weights_id = weights_id
        self.context_length = context_length
        self.batch_size = batch_size
        self.disk_cache = disk_cache
        self.encode_with_prefix = encode_with_prefix
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.memory_entries = memory_entries

    def cache_key(self, vocabulary: Vocabulary) -> str:
        h = hashlib.sha256()
        h.update(self.weights_id.encode())
        h.update("\x00".join(self.templates).encode())
        h.update("\x01".join(vocabulary.flat_synonyms()).encode())
        if vocabulary.descriptions:  # sentences and their mode are part of the key
            h.update(f"\x02{self.description_mode}".encode())
            for c in vocabulary:
                h.update(("\x03" + "\x04".join(c.descriptions)).encode())
        if self.synonym_combination != "max":
            h.update(f"\x05{self.synonym_combination}".encode())
        return h.hexdigest()[:24]

    def rows_per_class(self, vocabulary: Vocabulary) -> list[int]:
        """Classifier rows of each class: its synonyms, one for a class whose descriptions
        replace its templates, one for every class with ``synonym_combination: mean``."""
        if self.synonym_combination == "mean":
            return [1] * len(vocabulary)
        replace = self.description_mode == "replace"
        return [1 if replace and c.descriptions else len(c.synonyms) for c in vocabulary]

    def __call__(
        self, vocabulary: Vocabulary, device: torch.device | str = "cpu"
    ) -> TextClassifier:
        key = self.cache_key(vocabulary)
        rows = self.rows_per_class(vocabulary)
        emb = self._memory.get(key)
        if emb is None and self.disk_cache and self.weights_id:
            emb = self._load_disk(key, sum(rows))
        if emb is None:
            # Cached embeddings outlive this call: make them ordinary tensors even when the
            # first request comes from inside torch.inference_mode (training reuses them).
            with torch.inference_mode(False), torch.no_grad():
                emb = self.encode_vocabulary(vocabulary, device)
            if self.disk_cache and self.weights_id:
                self._save_disk(key, emb)
        self._keep(key, emb)
        return TextClassifier(emb.to(device), rows, vocabulary)

    def encode_vocabulary(
        self, vocabulary: Vocabulary, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """(sum(rows_per_class), D) classifier rows of ``vocabulary``, class-major."""
        if not vocabulary.descriptions:
            emb = self.encode_synonyms(vocabulary.flat_synonyms(), device)
            return self._combine(emb, vocabulary.num_synonyms)
        replace = self.description_mode == "replace"
        # Template prompts for every synonym that keeps them (all of them in "both" mode).
        templated = [s for c in vocabulary if not (replace and c.descriptions) for s in c.synonyms]
        means = self._template_means(templated, device) if templated else None
        sentences = [d for c in vocabulary for d in c.descriptions]
        owners = [c.name for c in vocabulary for _ in c.descriptions]
        described = self._encode_sentences(sentences, owners, device)
        out, t_row, d_row = [], 0, 0
        n_t = len(self.templates)
        for c in vocabulary:
            d = described[d_row : d_row + len(c.descriptions)]
            d_row += len(c.descriptions)
            if replace and c.descriptions:
                out.append(F.normalize(d.mean(0, keepdim=True), dim=-1))
                continue
            m = means[t_row : t_row + len(c.synonyms)]
            t_row += len(c.synonyms)
            if c.descriptions:  # CuPL "both": one average over templates and sentences
                m = (m * n_t + d.sum(0, keepdim=True)) / (n_t + len(c.descriptions))
            out.append(F.normalize(m, dim=-1))
        rows = [len(r) for r in out]
        return self._combine(torch.cat(out).cpu(), rows)

    def _combine(self, emb: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        return combine_synonyms(emb, rows, self.synonym_combination)

    def _encode_sentences(
        self, sentences: Sequence[str], owners: Sequence[str], device: torch.device | str
    ) -> torch.Tensor:
        """(N, D) normalised features of description ``sentences`` (no template); warns, naming
        the classes (``owners``), about sentences cut to the tower's context."""
        if not sentences:
            return torch.empty(0, 0)
        tokens = self.tokenizer(list(sentences))
        lengths = tokens.argmax(dim=-1) + 1
        cut = (tokens[:, -1] != 0) & (lengths == tokens.shape[1])
        if cut.any():
            names = sorted({owners[i] for i in torch.nonzero(cut).flatten().tolist()})
            warnings.warn(
                f"{int(cut.sum())} description sentence(s) exceed the text context of "
                f"{tokens.shape[1]} tokens and were truncated (class(es) {names[:5]})",
                stacklevel=4,
            )
        return F.normalize(self._encode_batches(tokens, lengths, device), dim=-1).cpu()

    def remember(self, classifier: TextClassifier) -> None:
        """Keep ``classifier`` (encoded by this tower elsewhere, e.g. by another process) in the
        memory cache, so that encoding its vocabulary again is a lookup."""
        vocabulary = classifier.vocabulary
        if not isinstance(vocabulary, Vocabulary):
            raise TypeError("remember() needs a classifier whose vocabulary is a Vocabulary")
        emb = classifier.embeddings.detach()
        rows = sum(self.rows_per_class(vocabulary))
        if emb.shape[0] != rows:
            raise ValueError(
                f"text classifier has {emb.shape[0]} rows; this encoder gives its vocabulary "
                f"{rows} (another description mode or synonym combination?)"
            )
        self._keep(self.cache_key(vocabulary), emb)

    def _keep(self, key: str, emb: torch.Tensor) -> None:
        """Into the memory cache as the newest entry; the least recently used beyond
        ``memory_entries`` are dropped (a server's free-text vocabularies stay bounded)."""
        self._memory[key] = emb
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_entries:
            self._memory.popitem(last=False)

    def encode_synonyms(
        self, synonyms: Sequence[str], device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """(S, D) normalised template-ensembled embeddings of ``synonyms``."""
        return F.normalize(self._template_means(synonyms, device), dim=-1).cpu()

    def _template_means(
        self, synonyms: Sequence[str], device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """(S, D) mean over templates of the normalised prompt features (not renormalised)."""
        prompts = [t.format(s) for s in synonyms for t in self.templates]
        tokens = self.tokenizer(prompts)
        lengths = tokens.argmax(dim=-1) + 1  # end-of-text is the largest token id
        too_long = sorted(
            {
                synonyms[i // len(self.templates)]
                for i in torch.nonzero((tokens[:, -1] != 0) & (lengths == tokens.shape[1]))
                .flatten()
                .tolist()
            }
        )
        if too_long:
            warnings.warn(
                f"{len(too_long)} class name(s) exceed the text context of {tokens.shape[1]} tokens "
                f"and were truncated: {too_long[:3]}",
                stacklevel=3,
            )
        if self.encode_with_prefix is not None:
            out = self._encode_by_template(tokens, lengths, device)
        else:
            out = self._encode_batches(tokens, lengths, device)
        feats = F.normalize(out, dim=-1).view(len(synonyms), len(self.templates), -1)
        return feats.mean(1)

    def _encode_batches(
        self, tokens, lengths, device, prefix=None, batch_size=None
    ) -> torch.Tensor:
        """Features (N, D) of ``tokens`` (N, L), batched by length (longest first) and cut to
        each batch's longest prompt; with ``prefix``, ``tokens`` are the parts after it."""
        order = torch.argsort(lengths, descending=True, stable=True)
        batch_size = batch_size or self.batch_size
        out = None
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokens[idx, : int(lengths[idx].max())].to(device)
            if prefix is None:
                f = self.encode_tokens(batch).float()
            else:
                f = self.encode_with_prefix(prefix.to(device), batch).float()
            if out is None:
                out = torch.empty(len(order), f.shape[-1], device=f.device)
            out[idx.to(f.device)] = f
        return out

    def _encode_by_template(self, tokens, lengths, device) -> torch.Tensor:
        """Per template: the tokens every prompt of it shares (start-of-text and the words before
        the class name) are encoded once (:meth:`CLIPBackbone.encode_text_with_prefix`)."""
        n_t = len(self.templates)
        out = None
        for t in range(n_t):
            index = torch.arange(t, tokens.shape[0], n_t)
            group = tokens[index]
            same = (group == group[:1]).all(0)
            shared = int(same.long().cumprod(0).sum())
            # Keep the end-of-text token (and so at least one token) in every prompt's rest.
            shared = min(shared, int(lengths[index].min()) - 1)
            prefix = group[0, :shared]
            rest = group[:, shared:]
            # The parts after the prefix are short: batch more prompts so that each matrix
            # product still has enough rows to use the weights it reads (CPU: bandwidth-bound).
            f = self._encode_batches(
                rest,
                lengths[index] - shared,
                device,
                prefix=prefix if shared > 0 else None,
                batch_size=4 * self.batch_size,
            )
            if out is None:
                out = torch.empty(tokens.shape[0], f.shape[-1], device=f.device)
            out[index.to(f.device)] = f
        return out

    # ------------------------------------------------------------------ disk cache
    def _path(self, key: str) -> Path:
        return ovseg_home() / "text_embeddings" / f"{key}.pt"

    def _load_disk(self, key: str, num_rows: int) -> torch.Tensor | None:
        """The cached (S, D) embeddings, or None (then they are rebuilt and rewritten): an entry
        whose checksum, shape or dtype does not match what it recorded, or that holds non-finite
        values, is never trusted (one warning naming the file)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a broken cache file is rebuilt, never trusted
            return _distrust(path, f"unreadable ({type(e).__name__})")
        if not isinstance(entry, dict) or entry.get("format") != _CACHE_FORMAT:
            return _distrust(path, "not an ovseg text-embedding cache entry (old format?)")
        emb = entry.get("embeddings")
        if not isinstance(emb, torch.Tensor):
            return _distrust(path, "no embeddings tensor")
        shape, dtype = list(emb.shape), str(emb.dtype)
        if shape != entry.get("shape") or dtype != entry.get("dtype"):
            return _distrust(path, f"holds {shape} {dtype}, recorded {entry.get('shape')} "
                                   f"{entry.get('dtype')}")  # fmt: skip
        if emb.ndim != 2 or emb.shape[0] != num_rows or not emb.is_floating_point():
            return _distrust(path, f"shape {shape} {dtype}, expected ({num_rows}, D) float")
        if _checksum(emb) != entry.get("sha256"):
            return _distrust(path, "checksum mismatch (the file was modified or corrupted)")
        if not torch.isfinite(emb).all():
            return _distrust(path, "non-finite values")
        return emb

    def _save_disk(self, key: str, emb: torch.Tensor) -> None:
        path = self._path(key)
        emb = emb.detach().cpu().contiguous()
        entry = {"format": _CACHE_FORMAT, "embeddings": emb, "shape": list(emb.shape),
                 "dtype": str(emb.dtype), "sha256": _checksum(emb)}  # fmt: skip
        try:
            with atomic_write(path) as f:
                torch.save(entry, f)
        except OSError as e:
            logger.warning("could not write text-embedding cache %s (%s)", path, e)


_CACHE_FORMAT = "ovseg-text-embeddings-v1"


def _checksum(emb: torch.Tensor) -> str:
    """sha256 of the tensor's bytes (C order)."""
    return hashlib.sha256(emb.detach().cpu().contiguous().view(torch.uint8).numpy()).hexdigest()


def _distrust(path: Path, why: str) -> None:
    warnings.warn(f"text-embedding cache {path}: {why}; rebuilding it", stacklevel=4)
    return None


@PROMPT_BUILDERS.register("templates")
def build_template_encoder(cfg: TextConfig, tower: Any, weights_id: str) -> TextEncoder:
    """FC-CLIP's classifier: every template x every synonym through the frozen text tower,
    averaged over templates (``model.text.templates``; see :mod:`ovseg.text.templates`)."""
    import open_clip

    return TextEncoder(
        encode_tokens=tower.encode_text,
        tokenizer=open_clip.get_tokenizer(tower.name),
        templates=resolve_templates(cfg.templates),
        weights_id=weights_id if cfg.disk_cache else "",
        context_length=tower.context_length,
        batch_size=cfg.batch_size,
        disk_cache=cfg.disk_cache,
        encode_with_prefix=tower.encode_text_with_prefix if tower.supports_prefix_cache else None,
        memory_entries=cfg.memory_cache_size,
        description_mode=cfg.description_mode,
        synonym_combination=cfg.synonym_combination,
    )
