"""The encoded vocabulary a segmentor classifies against."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ovseg.structures.classes import ClassList


@dataclass
class TextClassifier:
    """Encoded vocabulary.

    Attributes:
        embeddings: (S, D) float, one L2-normalised row per synonym, class-major.
        num_synonyms: synonyms per class (sums to S).
        vocabulary: the classes, in order.
    """

    embeddings: torch.Tensor
    num_synonyms: list[int]
    vocabulary: ClassList

    def to(self, device) -> TextClassifier:
        return TextClassifier(self.embeddings.to(device), self.num_synonyms, self.vocabulary)

    @property
    def synonym_index(self) -> torch.Tensor:
        """(S,) int64: the class index of each embedding row (for tensor-only consumers such as
        :meth:`ovseg.models.segmentors.FCCLIP.predict_logits` and exported graphs)."""
        counts = torch.as_tensor(self.num_synonyms, dtype=torch.long)
        return torch.repeat_interleave(torch.arange(len(self.num_synonyms)), counts).to(
            self.embeddings.device
        )
