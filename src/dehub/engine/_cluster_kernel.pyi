"""Type stub of the compiled k-means cluster sums (``_cluster_kernel.c``)."""

import numpy as np

def add_rows(x: np.ndarray, labels: np.ndarray, out: np.ndarray, /) -> None: ...
