"""Which Arrow allocator archive writing uses.

pyarrow's default allocator is mimalloc, which keeps a heap per thread. The writer encodes
on several threads (:data:`archive.writer.ENCODERS`) while the source reads on another, and
with mimalloc a 1M-record build then peaked at 435-458 MB RSS; with jemalloc or the system
allocator, at the same speed, 372-384 MB. So archive writing switches the process to
jemalloc (the system allocator where a pyarrow build lacks it), unless the operator chose an
allocator with Arrow's own ``ARROW_DEFAULT_MEMORY_POOL`` variable.
"""

from __future__ import annotations

import os
import threading

import pyarrow as pa

_lock = threading.Lock()
_chosen: str | None = None


def use_compact_pool() -> str:
    """Make jemalloc (else the system allocator) Arrow's default pool in this process, once;
    returns the pool's backend name. Arrays already allocated stay where they are."""
    global _chosen
    with _lock:
        if _chosen is None:
            if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
                _chosen = pa.default_memory_pool().backend_name
            else:
                try:
                    pool = pa.jemalloc_memory_pool()
                except NotImplementedError:
                    pool = pa.system_memory_pool()
                pa.set_memory_pool(pool)
                _chosen = pool.backend_name
        return _chosen
