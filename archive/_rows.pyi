"""Types of archive/_rows.c (see its header comment for the column descriptions)."""

from typing import Any

TEXT: int
LIST: int
TIME: int

def encode(columns: list[tuple[Any, ...] | None], rows: int, delimiter: str) -> bytes: ...
def split(
    offsets: Any, data: Any, keys: list[bytes], rows: int
) -> list[tuple[bytes, bytes, bytes | None, int]] | None: ...
