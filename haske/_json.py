"""Fast JSON: orjson when it is installed, the standard library otherwise.

Both produce compact UTF-8 JSON (no spaces, non-ASCII kept as is) so the bytes on the wire do not
depend on which one is installed. Encoding errors are ``TypeError``, decoding errors ``ValueError``.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None  # type: ignore[assignment]

__all__ = ["BACKEND", "dumps", "dumps_bytes", "loads"]

if orjson is not None:
    BACKEND = "orjson"

    def dumps_bytes(obj: Any) -> bytes:
        """Encode ``obj`` as compact JSON, UTF-8 bytes."""
        return orjson.dumps(obj)

    def dumps(obj: Any) -> str:
        """Encode ``obj`` as a compact JSON string."""
        return orjson.dumps(obj).decode()

    def loads(data: str | bytes | bytearray | memoryview) -> Any:
        """Decode JSON text or UTF-8 bytes."""
        return orjson.loads(data)

else:  # pragma: no cover - exercised where orjson is absent
    BACKEND = "json"
    _encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def dumps(obj: Any) -> str:
        """Encode ``obj`` as a compact JSON string."""
        try:
            return _encoder.encode(obj)
        except ValueError as exc:  # out-of-range floats: a TypeError, as with orjson
            raise TypeError(str(exc)) from exc

    def dumps_bytes(obj: Any) -> bytes:
        """Encode ``obj`` as compact JSON, UTF-8 bytes."""
        return dumps(obj).encode()

    def loads(data: str | bytes | bytearray | memoryview) -> Any:
        """Decode JSON text or UTF-8 bytes."""
        if isinstance(data, memoryview):
            data = bytes(data)
        return json.loads(data)
