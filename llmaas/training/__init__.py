"""Fine-tuning as a service: file validation, datasets, the LoRA trainer, the job lifecycle and the worker.

`files` (JSONL validation: chat, prompt/completion, DPO preferences) → `dataset` (tokens + assistant-only mask) →
`objectives` (supervised or DPO loss) → `trainer` (PEFT loop, metrics, checkpoints with `state`'s optimizer state;
`labels` scores classifiers) are pure training; `jobs` (lifecycle + lease rules), `results` (the step-metrics CSV),
`export` (the adapter zip) and `registry` (fine-tuned and checkpoint models for the API) use the store (the tables and
queries are `llmaas.store.training` and `llmaas.store.files`); `auto` is OpenAI's n_epochs rule; `worker` ties them together in its own process (`spawn` starts it
beside `llmaas serve`). Nothing here knows HTTP, and only `trainer`/`objectives`/`labels`/`state`/`worker` import
torch (the API imports `jobs`, `registry` and `export`).
"""
