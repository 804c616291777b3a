"""``dehub embed`` cuts each text to the model's maximum length before tokenization
(issue 24, item 5): one 20 MB line costs no more than a normal batch.

The check runs in a child process under an address-space limit (``RLIMIT_AS``) set to
what the child already uses after a normal batch plus 1 GiB. Before the cut, the 20 MB
line alone needed about 3.4 GB more (the tokenizer split all of it, then truncated).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from dehub.datasets.shards import shard_paths

# sentence-transformers is imported by the ``minilm`` fixture, never at collection: its
# optional ``import datasets`` would find tests/datasets/ and break lancedb's import in
# the modules collected after this one (see tests/embed/conftest.py)
resource = pytest.importorskip("resource")

SENTENCE = "the quick brown fox jumps over the lazy dog while seven wizards quietly hex the jukebox "

_CHILD = r"""
import re, resource, sys
from dehub.embed import get_encoder
from dehub.embed.writer import embed

def vm_peak():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmPeak:\s+(\d+) kB", status).group(1)) * 1024

enc = get_encoder()
enc.encode_texts(["a normal sentence about a cat"] * 64)  # a normal batch: threads, arenas, weights
limit = vm_peak() + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
res = embed(sys.argv[1], sys.argv[2], encoder=enc, batch_size=64, progress=False)
print("embedded", res.n_items, "under", limit >> 20, "MiB")
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc for VmPeak")
def test_a_20mb_line_embeds_under_an_address_space_limit(tmp_path, minilm):
    line = SENTENCE * (20_000_000 // len(SENTENCE))
    assert len(line) >= 19_900_000
    src = tmp_path / "texts.txt"
    src.write_text("a short text\n" + line + "\nanother short text\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(src), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "embedded 3 under" in out.stdout
    vectors = np.load(shard_paths(tmp_path / "out" / "text_emb")[0])
    # the model truncates at 256 tokens: the 20 MB line embeds as its first few thousand characters
    want = minilm.encode_texts(["a short text", SENTENCE * 40, "another short text"])
    np.testing.assert_allclose(vectors, want, atol=2e-5)


def test_texts_are_cut_to_the_models_length_before_tokenization(minilm):
    from dehub.embed.encoders import max_chars

    assert minilm.max_tokens == 256 and max_chars(256) == 256 * 128
    seen: list[int] = []
    name = "preprocess" if hasattr(minilm.model, "preprocess") else "tokenize"  # sentence-transformers 6 / 5
    original = getattr(minilm.model, name)

    def spy(texts, *args, **kwargs):
        seen.extend(len(t) for t in texts)
        return original(texts, *args, **kwargs)

    setattr(minilm.model, name, spy)
    try:
        minilm.encode_texts(["x " * 1_000_000, "short"])
    finally:
        delattr(minilm.model, name)  # back to the class's method
    assert sorted(seen) == [5, max_chars(256)]
