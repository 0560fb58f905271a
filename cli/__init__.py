"""The ``imgq`` command line: the processes (api, worker, scheduler, simulator), the local stack,
the demo and the operator commands. The top floor: it starts every other piece
(docs/architecture.md)."""
