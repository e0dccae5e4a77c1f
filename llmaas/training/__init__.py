"""Fine-tuning as a service: file validation, datasets, the LoRA trainer, the job lifecycle and the worker.

`files` (JSONL validation) → `dataset` (tokens + assistant-only mask) → `trainer` (PEFT loop) are pure training;
`jobs` (lifecycle + lease), `filestore` (uploads) and `registry` (fine-tuned models for the API) talk to the store;
`worker` ties them together in its own process (`spawn` starts it beside `llmaas serve`). Nothing here knows HTTP,
and only `trainer`/`worker` import torch (the API imports `jobs`, `filestore` and `registry`).
"""
