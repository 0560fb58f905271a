"""Signed webhooks: the outbox rows, the guard that refuses private targets, and the sender."""
