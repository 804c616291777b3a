"""Type stub of the compiled running top-k (``_topk_kernel.c``)."""

import numpy as np

ISA: str

def push(
    scores: np.ndarray,
    offset: np.ndarray | None,
    id_start: int,
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
def push_rows(
    scores: np.ndarray,
    ids: np.ndarray,
    rows: np.ndarray,
    v: np.ndarray,
    id: np.ndarray,
    fill: np.ndarray,
    thr: np.ndarray,
    flo: np.ndarray,
    k: int,
    /,
) -> None: ...
