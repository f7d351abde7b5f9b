"""Content hashes for cache keys and resume checks: one hasher, arrays hashed in full.

numpy only (torch tensors are hashed by :func:`sei.engine.encoders.weights_fingerprint`, which
feeds their bytes to :func:`hasher`).
"""

from __future__ import annotations

import hashlib

import numpy as np

# Bytes hashed per step: large arrays go through in slices, without a full copy.
_SLICE_BYTES = 64 << 20


def hasher():
    """A fresh 128-bit hash object: xxhash's xxh3_128 when installed (~10x faster on large
    arrays), else blake2b."""
    try:
        import xxhash

        return xxhash.xxh3_128()
    except ImportError:
        return hashlib.blake2b(digest_size=16)


def update_array(h, array) -> None:
    """Feed ``array``'s shape, dtype and every byte to the hash ``h`` (in 64 MiB slices, no
    copy when contiguous)."""
    a = np.asarray(array)
    h.update(str((a.shape, a.dtype.str)).encode())
    flat = a.reshape(len(a), -1) if a.ndim else a.reshape(1, -1)
    row = max(1, flat.shape[1] * flat.dtype.itemsize)
    step = max(1, _SLICE_BYTES // row)
    for s in range(0, len(flat), step):
        h.update(np.ascontiguousarray(flat[s:s + step]).data)


def array_fingerprint(array) -> str:
    """32 hex digits of :func:`update_array`'s hash of ``array`` ("none" for None).

    >>> array_fingerprint(np.zeros(3)) == array_fingerprint(np.zeros(3)) != array_fingerprint(np.ones(3))
    True
    """
    if array is None:
        return "none"
    h = hasher()
    update_array(h, array)
    return h.hexdigest()[:32]
