"""The foundation every floor may import: the one settings object (``IMGQ_*``), every Redis key
(``keys.py``), the fail-open Redis client and the Lua loader. It imports no other floor
(docs/architecture.md)."""
