"""Type stub of the compiled running top-k (``_topk_kernel.c``)."""

import numpy as np

ISA: str

def push(
    scores: np.ndarray,
    offset: np.ndarray | None,
    id_start: int,
    ids: np.ndarray | None,
    rows: np.ndarray | None,
    v: np.ndarray,
    id: np.ndarray,
    fill: np.ndarray,
    thr: np.ndarray,
    flo: np.ndarray,
    k: int,
    floor_rank: int,
    /,
) -> None: ...
def finish(
    v: np.ndarray, id: np.ndarray, fill: np.ndarray, thr: np.ndarray, flo: np.ndarray, k: int, /
) -> None: ...
def bf16_prepare(x: np.ndarray, bits: np.ndarray | None, sq: np.ndarray, rsq: np.ndarray, /) -> None: ...

CHAIN_ISA: str

def chain_scores(
    q: np.ndarray,
    x: np.ndarray,
    indptr: np.ndarray,
    cols: np.ndarray,
    offset: np.ndarray | None,
    ends: np.ndarray,
    out: np.ndarray,
    isa: str | None = None,
    /,
) -> None: ...
