"""Embeddings from raw data: texts and images -> a clip-retrieval embedding folder.

``dehub embed INPUT -o DIR [--model NAME]`` (:mod:`dehub.embed.cli`) or
:func:`embed` in Python. Encoders (:mod:`dehub.embed.encoders`): sentence-transformers
(default: the bundled all-MiniLM-L6-v2, offline), open_clip, and ONNX Runtime for
torch-free installs (:func:`export_onnx` writes the model once). The folder is read back by
:func:`dehub.datasets.layouts.read_embeddings` and every command that takes embeddings.
"""

from __future__ import annotations

from .encoders import (
    DEFAULT_MODEL,
    Encoder,
    OnnxEncoder,
    OpenClipEncoder,
    SentenceTransformerEncoder,
    export_onnx,
    get_encoder,
)
from .inputs import read_inputs
from .provenance import build_records, embedding_folder_info
from .writer import DEFAULT_SHARD_SIZE, EmbedResult, embed

__all__ = [
    "embed",
    "EmbedResult",
    "DEFAULT_SHARD_SIZE",
    "DEFAULT_MODEL",
    "Encoder",
    "SentenceTransformerEncoder",
    "OpenClipEncoder",
    "OnnxEncoder",
    "get_encoder",
    "export_onnx",
    "read_inputs",
    "build_records",
    "embedding_folder_info",
]
