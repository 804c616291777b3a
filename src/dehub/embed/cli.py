"""``dehub embed INPUT -o DIR [--model NAME]``: the SUBCOMMANDS entry merged by dehub.cli."""

from __future__ import annotations

import argparse
import contextlib
import os

from .writer import embed

__all__ = ["SUBCOMMANDS"]


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="texts (.txt one per line, .jsonl, .parquet) or an image folder")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="embedding folder to write (clip-retrieval layout); rerun to resume",
    )
    p.add_argument(
        "--model",
        default=None,
        help="encoder: minilm (default, bundled, offline), a sentence-transformers name or path, "
        "open_clip:ARCH[:PRETRAINED], onnx:DIR",
    )
    p.add_argument(
        "--kind", choices=["text", "image"], help="what INPUT lists (default: text, or image for a folder)"
    )
    p.add_argument("--column", help="the JSONL field / parquet column holding the texts or image paths")
    p.add_argument("--batch-size", type=int, default=64, help="rows per encoder call (default 64)")
    p.add_argument("--shard-size", type=int, default=100_000, help="rows per .npy shard (default 100000)")
    p.add_argument("--device", default="cpu", help="torch / onnxruntime device (default cpu)")
    p.add_argument("--fp16", action="store_true", help="half precision weights (CUDA devices only)")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bars (dehub's nor the encoder library's)"
    )


_QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}


@contextlib.contextmanager
def _quiet_libraries(enable: bool):
    """--quiet: the encoder libraries' own bars and notices (model loading) off, for this run only."""
    saved = {k: os.environ.get(k) for k in _QUIET_ENV}
    if enable:
        os.environ.update(_QUIET_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(args: argparse.Namespace) -> int:
    with _quiet_libraries(args.quiet):
        return _embed(args)


def _embed(args: argparse.Namespace) -> int:
    res = embed(
        args.input,
        args.output,
        model=args.model,
        kind=args.kind,
        column=args.column,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        device=args.device,
        fp16=args.fp16,
        progress=not args.quiet,
    )
    sub = "text_emb" if res.kind == "text" else "img_emb"
    print(
        f"wrote {res.output}: {res.n_items} {res.kind}s, d={res.dim}, {res.shards_written} shards written, "
        f"{res.shards_skipped} already done ({sub}/, metadata/)"
    )
    return 0


SUBCOMMANDS = {"embed": ("embed texts or images into a clip-retrieval embedding folder", _setup, _run)}
