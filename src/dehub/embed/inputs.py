"""What ``dehub embed`` reads: texts (lines, JSONL, parquet) or images (a folder, a list).

* a ``.txt`` file: one text per line (empty lines kept as empty texts; a trailing newline
  is not a text); with ``kind='image'`` one image path or URL per line;
* a ``.jsonl`` file: one object per line, the text in ``column`` (default ``text``; for
  images ``path`` or ``url``);
* a ``.parquet`` file: the column ``column`` (default ``text`` / ``path`` / ``url``);
* a directory: its image files (recursively, sorted; .jpg .jpeg .png .webp .bmp .gif).

Returns the kind (``"text"`` or ``"image"``), the items, and the metadata columns
(``text``; or ``path`` / ``url``; plus the other scalar fields of JSONL objects and the
other non-list columns of parquet input, e.g. ``url`` and ``caption``, so they travel into
the folder's ``metadata/`` and from there into the index; ``id`` is the writer's own), in
input order.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._errors import InputError
from .._json import JSONLimits, read_jsonl

__all__ = ["read_inputs", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
#: One JSONL line: a text of any length the encoder truncates anyway (see encoders), a
#: few fields, shallow; read by the bounded JSON reader.
_LINE_LIMITS = JSONLimits(max_bytes=256 << 20, max_depth=32, max_values=1 << 16)


def _image_meta(items: list[str]) -> dict[str, list]:
    if any("://" in s for s in items):
        return {"url": items}
    return {"path": items}


def read_inputs(path: str | os.PathLike, *, kind: str | None = None, column: str | None = None):
    """``(kind, items, metadata columns)`` for ``dehub embed`` (see the module docstring)."""
    p = Path(path)
    if kind not in (None, "text", "image"):
        raise InputError(f"kind must be 'text' or 'image'; received {kind!r}")
    if not p.exists():
        raise FileNotFoundError(
            f"no input at {p}; expected a .txt, .jsonl or .parquet file, or an image folder"
        )
    if p.is_dir():
        if kind == "text":
            raise InputError(f"{p} is a directory; texts come from a .txt, .jsonl or .parquet file")
        images = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"{p} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return "image", images, {"path": images}
    suffix = p.suffix.lower()
    kind = kind or "text"
    extras: dict[str, list] = {}
    if suffix in (".txt", ".tsv", ".lst"):
        items = p.read_text(encoding="utf-8").split("\n")
        if items and items[-1] == "":
            items.pop()
    elif suffix in (".jsonl", ".ndjson"):
        objs: list[dict] = []
        items = []
        keys = [column] if column else (["text"] if kind == "text" else ["path", "url"])
        for lineno, obj in read_jsonl(p, limits=_LINE_LIMITS, strict=False):
            key = next((k for k in keys if isinstance(obj, dict) and k in obj), None)
            if key is None:
                raise InputError(
                    f"{p}:{lineno}: expected an object with a {' or '.join(map(repr, keys))} field"
                )
            items.append(obj[key])
            objs.append(obj)
        names = {k for o in objs for k, v in o.items() if isinstance(v, (str, int, float, bool))}
        for k in sorted(names - {key, "id"} if objs else set()):
            col = [o.get(k) for o in objs]
            if len({type(v) for v in col if v is not None}) == 1:  # one type per column
                extras[k] = col
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(p).names
        keys = [column] if column else (["text", "caption"] if kind == "text" else ["path", "url"])
        key = next((k for k in keys if k in names), None)
        if key is None:
            raise InputError(f"{p}: expected a column {' or '.join(map(repr, keys))}; columns are {names}")
        table = pq.read_table(p)
        items = table.column(key).to_pylist()
        import pyarrow as pa

        for f in table.schema:
            if f.name not in (key, "id") and not (
                pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
            ):
                extras[f.name] = table.column(f.name).to_pylist()
    else:
        raise InputError(
            f"{p}: expected a .txt, .jsonl or .parquet file, or an image folder; received {suffix or 'no suffix'}"
        )
    bad = [i for i, t in enumerate(items) if not isinstance(t, str)]
    if bad:
        raise InputError(f"{p}: items {bad[:5]} are not strings (null or another type)")
    if kind == "text":
        return "text", items, {"text": items, **{k: v for k, v in extras.items() if k != "text"}}
    base = _image_meta(items)
    return "image", items, {**base, **{k: v for k, v in extras.items() if k not in base}}
