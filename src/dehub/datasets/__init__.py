"""Paired retrieval data: containers and the bundled WordNet benchmark.

Importing this package needs only numpy; :mod:`dehub.datasets.encoder` (embedding your
own texts) imports torch/sentence-transformers lazily, on first use.
"""

from .base import Direction, PairedBenchmark, PairedSplit, RetrievalTask
from .loaders import (
    load_embeddings,
    load_file_benchmark,
    load_karpathy_benchmark,
    load_paired_split,
    load_relevance,
)
from .shards import ShardedArray, open_embeddings
from .wordnet import DatasetIntegrityError, load_wordnet_benchmark, wordnet_manifest

__all__ = [
    "Direction",
    "PairedSplit",
    "PairedBenchmark",
    "RetrievalTask",
    "DatasetIntegrityError",
    "load_wordnet_benchmark",
    "wordnet_manifest",
    "load_embeddings",
    "load_relevance",
    "load_paired_split",
    "load_file_benchmark",
    "load_karpathy_benchmark",
    "ShardedArray",
    "open_embeddings",
]
