"""The HTTP API (FastAPI): jobs, batches, SSE streams, limits, status and admin endpoints.

Its composition root is ``api/services.py``; the floors it may import are in docs/architecture.md."""
