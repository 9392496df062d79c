"""OneFormer's task-conditioned joint training and query-text contrastive loss (Jain et al.,
CVPR 2023) as an option of the FC-CLIP pipeline (docs/oneformer.md).

- Task token: per training image a task (semantic, instance, panoptic) is drawn from a seed
  that depends only on (run seed, position in the training stream), its targets are built for
  that task (:func:`task_targets`), and the frozen CLIP text embedding of "the task is {task}"
  goes through a learnt 2-layer MLP and is added to the decoder's initial query features. At
  test time the requested task picks the token (``"all"``: the panoptic token).
- Query-text contrastive loss: each image's last-layer queries, projected to the CLIP space and
  flattened, against the flattened frozen-CLIP embeddings of its text entries "a photo with a
  {class}" (one per target segment, in target order) padded with "a {task} photo"
  (:func:`ovseg.models.losses.contrastive.symmetric_info_nce`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ovseg.config.schema import ModelConfig
from ovseg.models.layers import MLP
from ovseg.models.losses.contrastive import symmetric_info_nce
from ovseg.text.vocabulary import Vocabulary

TASK_NAMES = ("semantic", "instance", "panoptic")
# The token of each test-time request: "all" computes every output from one pass, which needs
# one token; the panoptic targets contain the other two tasks' segments.
REQUEST_TOKEN = {"semantic": 0, "instance": 1, "panoptic": 2, "all": 2}


def token_name(request: str) -> str:
    """The name of the task token a test-time request uses (``"all"``: "panoptic"); a request
    that is not a task (a config's ``model.test.task`` may be anything) falls back to the
    panoptic token, the one a OneFormer head selects initially then."""
    return TASK_NAMES[REQUEST_TOKEN.get(request, REQUEST_TOKEN["panoptic"])]


TASK_PROMPT = "the task is {}"
ENTRY_PROMPT = "a photo with a {}"
PAD_PROMPT = "a {} photo"
# A second stream from the sample's seed, apart from the augmentation's use of the same seed.
_TASK_STREAM = 0x7A5C


def sample_task(seed: int, probs: Sequence[float]) -> int:
    """The task (index into :data:`TASK_NAMES`) of the training sample with ``seed``: a draw
    from ``default_rng([seed, stream])``, so it depends on the sample alone (not on the rank
    count, the DataLoader workers or a resume)."""
    u = np.random.default_rng([int(seed), _TASK_STREAM]).random()
    cum = np.cumsum(np.asarray(probs, dtype=np.float64))
    return int(min(np.searchsorted(cum / cum[-1], u, side="right"), len(TASK_NAMES) - 1))


def task_targets(
    labels: torch.Tensor, masks: torch.Tensor, isthing: torch.Tensor, task: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's panoptic targets -> the targets of ``task`` (OneFormer's dataset mapper).

    Args:
        labels: (N,) int64 class of each segment; masks: (N, H, W) bool.
        isthing: (C,) bool thing flag per class.
        task: 0 semantic (one mask per class present, in increasing class order, thing
            instances merged), 1 instance (thing segments only), 2 panoptic (all segments).

    Returns (labels, masks) of the task.
    """
    if task == 2:
        return labels, masks
    if task == 1:
        keep = isthing.to(labels.device)[labels]
        return labels[keep], masks[keep]
    if task != 0:
        raise ValueError(f"unknown task index {task}; tasks are {TASK_NAMES}")
    classes = torch.unique(labels, sorted=True)
    merged = torch.stack([masks[labels == c].any(0) for c in classes]) if len(classes) else masks
    return classes, merged


def encode_sentences(backbone: Any, sentences: Sequence[str], device: torch.device) -> torch.Tensor:
    """(N, D) L2-normalised frozen-CLIP text embeddings of raw ``sentences`` (no template)."""
    import open_clip

    tokens = open_clip.get_tokenizer(backbone.name)(list(sentences))
    length = int((tokens.argmax(dim=-1) + 1).max())
    with torch.no_grad():
        emb = backbone.encode_text(tokens[:, :length].to(device)).float()
    return F.normalize(emb, dim=-1)


class OneFormerHead(nn.Module):
    """The option's parts: the task token MLP and the contrastive projection and temperature.

    Args:
        task_text: (3, D) frozen-CLIP embeddings of "the task is {task}" (semantic, instance,
            panoptic), or None without task conditioning; kept as a buffer (checkpointed).
        hidden_dim: the decoder's query width.
        num_queries: Q; each image gets Q text entries (one per query).
        task_probs: training task probabilities (semantic, instance, panoptic).
        contrastive_weight: weight of the contrastive loss (0 = off).
        contrastive_temperature: initial temperature (learnable; ``exp`` of the log-scale is
            clamped at 100).
        test_task: the request whose token is selected initially (``model.test.task``).
    """

    max_cached_vocabularies = 8

    def __init__(
        self,
        *,
        task_text: torch.Tensor | None,
        embed_dim: int,
        hidden_dim: int,
        num_queries: int,
        task_probs: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
        contrastive_weight: float = 0.0,
        contrastive_temperature: float = 0.07,
        test_task: str = "panoptic",
    ):
        super().__init__()
        self.task_conditioning = task_text is not None
        if task_text is not None:
            self.register_buffer("task_text", task_text.detach().float().clone())
            self.task_mlp = MLP(embed_dim, hidden_dim, hidden_dim, 2)
        self.task_probs = tuple(float(p) for p in task_probs)
        self.num_queries = num_queries
        self.contrastive_weight = float(contrastive_weight)
        if self.contrastive_weight > 0:
            self.query_proj = nn.Linear(hidden_dim, embed_dim)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / contrastive_temperature)))
        self.task_index = 2
        self.select_task(test_task)
        self._entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    # ------------------------------------------------------------------ task token
    def select_task(self, task: str) -> None:
        """Pick the token of the test-time request ``task`` (before ``predict_logits``)."""
        if task not in REQUEST_TOKEN:
            raise ValueError(f"unknown task {task!r}; choose one of {tuple(REQUEST_TOKEN)}")
        self.task_index = REQUEST_TOKEN[task]

    def query_offset(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        """(B, hidden_dim) added to the initial query features: the MLP of each image's task
        text (``task_ids`` (B,) int64), or of the selected token when None; None without task
        conditioning."""
        if not self.task_conditioning:
            return None
        if task_ids is None:
            return self.task_mlp(self.task_text[self.task_index]).expand(batch_size, -1)
        return self.task_mlp(self.task_text[task_ids.to(self.task_text.device)])

    # ------------------------------------------------------------------ training
    def draw_tasks(self, batch: dict) -> list[int]:
        """The task of each image of a training ``batch``: from its sample seed (``seeds``,
        set by the training sampler; else the dataset index); panoptic for every image
        without task conditioning."""
        n = len(batch["targets"])
        if not self.task_conditioning:
            return [2] * n
        seeds = batch.get("seeds")
        if not seeds or any(s is None for s in seeds):
            seeds = batch.get("indices") or list(range(n))
        return [sample_task(s, self.task_probs) for s in seeds]

    def targets_for_tasks(
        self, targets: list[dict], tasks: Sequence[int], vocabulary: Vocabulary
    ) -> list[dict]:
        """:func:`task_targets` of every image (unchanged without task conditioning)."""
        if not self.task_conditioning:
            return targets
        isthing = torch.tensor(vocabulary.isthing, dtype=torch.bool)
        out = []
        for t, task in zip(targets, tasks):
            labels, masks = task_targets(t["labels"], t["masks"], isthing, task)
            out.append({**t, "labels": labels, "masks": masks})
        return out

    def entry_table(
        self, vocabulary: Vocabulary, encode: Callable[[Sequence[str]], torch.Tensor]
    ) -> torch.Tensor:
        """(C + 3, D) embeddings of "a photo with a {class}" for the C classes (canonical
        names), then "a {task} photo" for the 3 tasks; encoded once per vocabulary (LRU)."""
        key = tuple(vocabulary.names)
        table = self._entries.get(key)
        if table is None:
            sentences = [ENTRY_PROMPT.format(n) for n in key]
            sentences += [PAD_PROMPT.format(t) for t in TASK_NAMES]
            table = encode(sentences)
            self._entries[key] = table
            while len(self._entries) > self.max_cached_vocabularies:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        return table

    def text_indices(self, labels: torch.Tensor, task: int, num_classes: int) -> torch.Tensor:
        """(Q,) rows of :meth:`entry_table` of one image: its segments' classes in target order
        (cut at Q), then the padding entry of its task."""
        q = self.num_queries
        idx = torch.full((q,), num_classes + task, dtype=torch.long)
        n = min(len(labels), q)
        idx[:n] = labels[:n].cpu()
        return idx

    def contrastive_loss(
        self,
        queries: torch.Tensor,
        targets: list[dict],
        tasks: Sequence[int],
        table: torch.Tensor,
    ) -> torch.Tensor:
        """The weighted query-text contrastive loss.

        Args:
            queries: (B, Q, hidden_dim) the last decoder layer's (normalised) queries.
            targets: the task targets (``labels``) of the B images; tasks: their tasks.
            table: :meth:`entry_table` of the vocabulary, (C + 3, D).
        """
        num_classes = table.shape[0] - len(TASK_NAMES)
        idx = torch.stack(
            [self.text_indices(t["labels"], k, num_classes) for t, k in zip(targets, tasks)]
        )
        text = table[idx.to(table.device)].flatten(1)
        image = self.query_proj(queries.float()).flatten(1)
        return self.contrastive_weight * symmetric_info_nce(image, text, self.logit_scale)


def build_oneformer_head(cfg: ModelConfig, backbone: Any) -> OneFormerHead | None:
    """The head of ``model.decoder.task_conditioning`` / ``model.loss.contrastive_weight``
    (None when both are off)."""
    d = cfg.decoder
    if not d.task_conditioning and cfg.loss.contrastive_weight <= 0:
        return None
    if d.type != "masked_attention":
        raise ValueError(
            "model.decoder.task_conditioning and model.loss.contrastive_weight need "
            f"model.decoder.type='masked_attention'; got {d.type!r}"
        )
    device = backbone.clip_model.positional_embedding.device
    task_text = None
    if d.task_conditioning:
        task_text = encode_sentences(backbone, [TASK_PROMPT.format(t) for t in TASK_NAMES], device)
    task = token_name(cfg.test.task)
    return OneFormerHead(
        task_text=task_text,
        embed_dim=backbone.embed_dim,
        hidden_dim=d.hidden_dim,
        num_queries=d.num_queries,
        task_probs=d.task_probs,
        contrastive_weight=cfg.loss.contrastive_weight,
        contrastive_temperature=cfg.loss.contrastive_temperature,
        test_task=task,
    )
