"""Persistence: every table and every query of llmaas, one module per domain, plus the engine and the blob store.

`tenancy.py`, `files.py`, `training.py`, `batches.py` and `responses.py` each hold a domain's tables, then every
query on them; `db.py` is the engine, sessions and `Base`; `query.py` the tenant-scoped helpers they share;
`blobs.py` the fsspec blob store; `migrations/` the only way the schema changes. What the rows mean (status enums,
transition maps, lease rules) stays with the domains, which pass their statuses in: nothing here imports them.
"""
