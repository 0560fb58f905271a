"""Tenant limits: queued jobs, jobs running, spend per day and month (one Lua admission)."""
