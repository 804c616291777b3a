"""Paired retrieval data: containers and the bundled WordNet benchmark.

Importing this package needs only numpy; :mod:`dehub.datasets.encoder` (embedding your
own texts) imports torch/sentence-transformers lazily, on first use.
"""

from .base import Direction, PairedBenchmark, PairedSplit, RetrievalTask
from .wordnet import DatasetIntegrityError, load_wordnet_benchmark, wordnet_manifest

__all__ = [
    "Direction",
    "PairedSplit",
    "PairedBenchmark",
    "RetrievalTask",
    "DatasetIntegrityError",
    "load_wordnet_benchmark",
    "wordnet_manifest",
]
