"""Containers for paired retrieval data (image-text, definition-lemma, ...).

The paper's protocol works on *paired* data: two sides ``a`` and ``b`` (captions and
images for COCO; glosses and lemmas for the bundled WordNet benchmark) and pairs saying
which ``a`` item goes with which ``b`` item. One :class:`PairedSplit` serves both
retrieval directions:

* ``a -> b`` (text-to-image): queries are ``a``, the gallery is ``b``, and the NNN
  reference set is the ``a`` side of the reference split;
* ``b -> a`` (image-to-text): queries are ``b``, the gallery is ``a``, and the reference
  set is the ``b`` side of the reference split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .._errors import InputError
from ..relevance import Relevance

__all__ = ["PairedSplit", "PairedBenchmark", "RetrievalTask", "Direction"]

Direction = Literal["a2b", "b2a"]


@dataclass(frozen=True)
class RetrievalTask:
    """One direction of one split: queries, gallery and who is relevant to whom."""

    name: str
    queries: np.ndarray
    gallery: np.ndarray
    relevance: Relevance
    query_text: tuple[str, ...] | None = None
    gallery_text: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.relevance.n_queries != self.queries.shape[0]:
            raise InputError(
                f"{self.name}: relevance covers {self.relevance.n_queries} queries but "
                f"{self.queries.shape[0]} query embeddings were given"
            )
        if self.relevance.n_gallery != self.gallery.shape[0]:
            raise InputError(
                f"{self.name}: relevance covers {self.relevance.n_gallery} gallery items but "
                f"{self.gallery.shape[0]} gallery embeddings were given"
            )


@dataclass(frozen=True)
class PairedSplit:
    """Embeddings of both sides of a split and the pairs between them.

    ``pairs`` is an int64 array of shape (n_pairs, 2): column 0 indexes ``a``, column 1
    indexes ``b``.
    """

    a: np.ndarray
    b: np.ndarray
    pairs: np.ndarray
    a_text: tuple[str, ...] | None = None
    b_text: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        pairs = np.asarray(self.pairs)
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise InputError(f"pairs must have shape (n_pairs, 2); received {pairs.shape}")
        for side, col in (("a", 0), ("b", 1)):
            n = getattr(self, side).shape[0]
            if pairs.size and (pairs[:, col].min() < 0 or pairs[:, col].max() >= n):
                raise InputError(
                    f"pairs column {col} must index side '{side}' (0..{n - 1}); "
                    f"received values {int(pairs[:, col].min())}..{int(pairs[:, col].max())}"
                )
        for side in ("a", "b"):
            text = getattr(self, f"{side}_text")
            n = getattr(self, side).shape[0]
            if text is not None and len(text) != n:
                raise InputError(f"{side}_text has {len(text)} entries but side '{side}' has {n} embeddings")

    def task(self, direction: Direction, name: str | None = None) -> RetrievalTask:
        """The retrieval task of one direction of this split."""
        p = np.asarray(self.pairs, dtype=np.int64)
        if direction == "a2b":
            rel = Relevance.from_pairs(p[:, 0], p[:, 1], self.a.shape[0], self.b.shape[0])
            return RetrievalTask(name or "a2b", self.a, self.b, rel, self.a_text, self.b_text)
        if direction == "b2a":
            rel = Relevance.from_pairs(p[:, 1], p[:, 0], self.b.shape[0], self.a.shape[0])
            return RetrievalTask(name or "b2a", self.b, self.a, rel, self.b_text, self.a_text)
        raise InputError(f"direction must be 'a2b' or 'b2a'; received {direction!r}")


@dataclass(frozen=True)
class PairedBenchmark:
    """Test, validation and reference splits of a paired data set.

    ``a_name``/``b_name`` label the sides (e.g. "caption"/"image", "definition"/"lemma");
    directions are reported as ``f"{a_name}->{b_name}"`` and the reverse.
    """

    name: str
    test: PairedSplit
    validation: PairedSplit
    reference: PairedSplit
    a_name: str = "a"
    b_name: str = "b"
    metadata: dict = field(default_factory=dict)

    def direction_name(self, direction: Direction) -> str:
        return f"{self.a_name}->{self.b_name}" if direction == "a2b" else f"{self.b_name}->{self.a_name}"

    def reference_for(self, direction: Direction) -> np.ndarray:
        """Reference queries for a direction: the query side of the reference split."""
        return self.reference.a if direction == "a2b" else self.reference.b
