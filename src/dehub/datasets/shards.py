"""Directories of ``.npy`` shards read as one array: :class:`ShardedArray` (public here).

The implementation is :mod:`dehub._shards`, in the core layer, because the distributed
runner and ``dehub.load`` read shard directories too without loading the datasets package.
"""

from __future__ import annotations

from .._shards import SHARD_DIGITS, ShardedArray, open_embeddings, shard_name, shard_order_key, shard_paths

__all__ = ["ShardedArray", "open_embeddings", "shard_paths", "shard_order_key", "shard_name", "SHARD_DIGITS"]
