"""The Batch API: input validation (input.py), the batch lifecycle in the database (jobs.py) and the runner that
executes lines through the serving layer at batch priority (runner.py)."""
