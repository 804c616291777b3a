"""The ``dehub serve`` subcommand (merged into ``dehub`` through ``SUBCOMMANDS``).

This module imports only the standard library; FastAPI and uvicorn are imported when
the command runs, with a one-line hint if the ``serve`` extra is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import socket
from collections.abc import Callable
from typing import Any

from .._errors import UserError
from .._extras import load_feature, require
from ..datasets.encoder import ENCODER_NAME

__all__ = ["SUBCOMMANDS"]

_HELP = "serve corrected search over HTTP (the bundled WordNet demo when no INDEX is given)"


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "index",
        nargs="?",
        help="index file written by 'dehub build', or a FAISS file exported by dehub.export.export_faiss "
        "(with its .json sidecar); omit it for the bundled WordNet demo",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=8000,
        help="TCP port (default 8000; 0 = a free port chosen by the system, printed at start)",
    )
    p.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' (default: the DEHUB_TOKEN environment variable; "
        "none = open); also enables POST /admin/reload",
    )
    p.add_argument(
        "--backend",
        choices=["auto", "exact", "hnsw"],
        default="auto",
        help="exact: dehub's exact engine; hnsw: a FAISS HNSW graph (built once, saved next to the index "
        "as INDEX.hnsw, efSearch tuned to --recall); auto (default): exact up to --hnsw-threshold items, "
        "hnsw above",
    )
    p.add_argument(
        "--hnsw-threshold",
        type=int,
        default=200_000,
        help="items above which auto uses HNSW (default 200000)",
    )
    p.add_argument(
        "--recall",
        type=float,
        default=0.99,
        help="HNSW: recall@10 against the exact corrected top-10 that efSearch is tuned to (default 0.99)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the memory-mapped index and graph pages (default 1)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="answer 408 when a request body is not received within this time (default 30)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow this browser origin (repeatable); CORS is off by default",
    )
    p.add_argument("--max-batch", type=int, default=256, help="most queries per request (default 256)")
    p.add_argument("--max-k", type=int, default=1000, help="largest k (default 1000)")
    p.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body in MiB (default 8)")
    p.add_argument(
        "--no-batching",
        action="store_true",
        help="search each request alone instead of merging concurrent ones",
    )
    p.add_argument(
        "--normalize",
        choices=["none", "l2"],
        default="none",
        help="L2-normalize query vectors (default: as sent)",
    )
    p.add_argument("--texts", help="item texts: a .json list or a .txt with one line per gallery row")
    p.add_argument("--text-encoder", choices=["minilm"], help="embed text queries with the bundled MiniLM")
    p.add_argument(
        "--onnx-encoder",
        metavar="DIR",
        help="embed text queries with this ONNX export of the bundled MiniLM (dehub.embed.encoders.export_onnx; "
        "needs onnxruntime); implies --text-encoder minilm",
    )
    p.add_argument(
        "--encoder",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="the text encoder's runtime: auto (default) = ONNX Runtime where installed (the MiniLM exported "
        "once into dehub's cache, or --onnx-encoder DIR), else torch; ONNX measured faster per text query "
        "(docs/serve.md), same vectors",
    )
    p.add_argument("--name", help="index name for /indices-list and clip-retrieval's indice_name")
    p.add_argument(
        "--watch",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="reload when the index file changes (poll interval)",
    )
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here (port 0: the system picks a free port, no race)."""
    if not 0 <= port <= 65535:
        raise SystemExit(f"dehub: --port must be in 0..65535; received {port}")
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"dehub: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


#: Environment variable carrying the settings to ``--workers`` processes (JSON).
SETTINGS_ENV = "DEHUB_SERVE_SETTINGS"


def settings_to_env(settings: Any) -> str:
    return json.dumps(dataclasses.asdict(settings))


def _run(args: argparse.Namespace) -> int:
    try:
        uvicorn = require("uvicorn", "'dehub serve'")
        app_module = load_feature("dehub.serve.app", "'dehub serve'")
    except ImportError as exc:
        raise SystemExit(f"dehub: {exc}") from None
    if args.index is not None and not os.path.exists(args.index):
        raise SystemExit(f"dehub: index file not found: {args.index}")
    for name in ("max_batch", "max_k", "max_body_mb", "hnsw_threshold", "workers", "body_timeout"):
        if getattr(args, name) <= 0:
            raise SystemExit(
                f"dehub: --{name.replace('_', '-')} must be positive; received {getattr(args, name)}"
            )
    if not 0 < args.recall <= 1:
        raise SystemExit(f"dehub: --recall must be in (0, 1]; received {args.recall}")
    if args.watch < 0:
        raise SystemExit(f"dehub: --watch must be >= 0 seconds; received {args.watch}")
    sock = _bind(args.host, args.port)
    port = int(sock.getsockname()[1])
    token = args.token if args.token is not None else (os.environ.get("DEHUB_TOKEN") or None)
    settings = app_module.Settings(
        source=args.index,
        backend=args.backend,
        hnsw_threshold=args.hnsw_threshold,
        recall=args.recall,
        token=token,
        cors_origins=tuple(args.cors_origin),
        max_batch=args.max_batch,
        max_k=args.max_k,
        max_body_bytes=int(args.max_body_mb * 2**20),
        body_timeout_s=args.body_timeout,
        batching=not args.no_batching,
        normalize=args.normalize,
        texts_file=args.texts,
        text_encoder=ENCODER_NAME if args.text_encoder == "minilm" or args.onnx_encoder else None,
        onnx_encoder=args.onnx_encoder,
        encoder=args.encoder,
        name=args.name,
        watch_seconds=args.watch,
        handle_sighup=True,
        preload_encoder=True,
    )
    what = args.index or "the bundled WordNet demo (definition -> lemma)"
    print(f"dehub serve: loading {what} ...", flush=True)
    try:
        served = app_module.load_from_settings(
            settings
        )  # builds and saves an HNSW graph once, before any worker
    except (OSError, UserError) as exc:  # anything else is a bug: the CLI shows it as one
        raise SystemExit(f"dehub: cannot serve {what}: {exc}") from None
    shown = f"[{args.host}]" if ":" in args.host else args.host
    extra = ""
    if served.hnsw:
        h = served.hnsw
        extra = f" (efSearch {h['ef_search']}, recall@10 {h['recall']} on {h['probe_source']})"
    print(
        f"dehub serve: {served.n_items} items, d={served.dim}, {served.method} on the {served.backend.name} "
        f"backend{extra}; {args.workers} worker(s)",
        flush=True,
    )
    print(
        f"dehub serve: listening on http://{shown}:{port}/ (Ctrl-C stops; SIGHUP reloads)"
        + ("; bearer token required" if token else ""),
        flush=True,
    )
    if args.workers == 1:
        app = app_module.create_app(settings, served)
        config = uvicorn.Config(app, log_level=args.log_level, access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
        return 0
    del served
    from uvicorn.supervisors import Multiprocess

    os.environ[SETTINGS_ENV] = settings_to_env(settings)
    config = uvicorn.Config(
        "dehub.serve.worker:create_worker_app",
        factory=True,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
    )
    Multiprocess(config, sockets=[sock]).run()
    return 0


SUBCOMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {
    "serve": (_HELP, _setup, _run),
}
