"""The Celery worker: it takes a job's lease, walks the job's route through the breaker and the
vendor limits, and writes the result. Its composition root is ``workers/context.py``
(docs/architecture.md)."""
