"""The Batch API: input validation (input.py), the batch lifecycle (jobs.py: the status map and the lease rules; the
tables and queries are llmaas.store.batches) and the runner that executes lines through the serving layer at batch
priority (runner.py)."""
