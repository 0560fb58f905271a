"""The breaker's Lua scripts, shipped as package data (see common.lua for the key layout)."""
