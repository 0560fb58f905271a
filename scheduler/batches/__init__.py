"""Bulk batches: JSONL parsing, accepting and listing batches, and their progress roll-up."""
