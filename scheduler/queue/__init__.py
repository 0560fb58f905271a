"""The queue: the waiting index in Redis (Lua in ``lua/``), submit/get/cancel over the SQL rows,
reconcile after a Redis loss, the leases that own running jobs, and worker heartbeats."""
