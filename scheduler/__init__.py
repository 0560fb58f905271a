"""Everything between a producer and a worker, one room per concern: ``queue/`` (the waiting
index, submit/get/cancel, leases, heartbeats), ``eta/`` (positions and ETAs), ``batches/``,
``webhooks/``, ``tenants/`` (tenant limits); the dispatcher; and ``process.py``, the scheduler
process's composition root. The rooms and the import rule are in docs/architecture.md."""
