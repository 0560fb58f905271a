"""Reading the Lua scripts that ship inside a package (``<package>/lua/<name>``)."""

from __future__ import annotations

from importlib import resources


def lua_source(package: str, name: str) -> str:
    return resources.files(package).joinpath("lua", name).read_text(encoding="utf-8")
