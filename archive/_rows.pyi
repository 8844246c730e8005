"""Types of the C row join (archive/_rows.c)."""

from typing import Any

def encode(columns: list[tuple[Any, Any] | None], rows: int, delimiter: str) -> bytes: ...
def split(
    offsets: Any, data: Any, keys: list[bytes], rows: int
) -> list[tuple[bytes, bytes, bytes | None, int]] | None: ...
