"""One settings object for llmaas, read once: environment (LLMAAS_*), an optional config file, CLI flags on top.

This module is the documented table of every setting (docs/configuration.md is checked against it by a test).
It refuses unsafe combinations instead of guessing; it does not load models or open databases.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Sources that name the models shipped inside PyPI packages (no hub, no network).
DEFAULT_CHAT_SOURCE = "builtin:smollm2"
DEFAULT_EMBEDDING_SOURCE = "builtin:all-minilm-l6-v2"
DEFAULT_CHAT_NAME = "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDING_NAME = "all-MiniLM-L6-v2"


class ModelSpec(BaseModel):
    """One served model. `source` is a builtin name, a local HF folder, a local .gguf file or a hub id."""

    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=128, description="The id clients send as `model`.")
    source: str = Field(
        description="builtin:smollm2 | builtin:all-minilm-l6-v2 | /path/to/hf-folder | /path/to/x.gguf | org/name (hub cache)"
    )
    kind: Literal["chat", "embedding"] = "chat"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 where the CPU computes it natively (or on CUDA), float32 otherwise."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    quantization: Literal["none", "int8"] = Field(
        "none",
        description="int8: weight-only int8 projections (a scale per output row) for faster decoding at low concurrency on CPUs without AMX (with AMX the bf16 tiles are faster), at a small cost in agreement with the full-precision model (bench/quantization.py); none: weights in `dtype`.",
    )
    max_model_len: int | None = Field(
        None, ge=16, le=1_048_576, description="Context length; default: the model's own."
    )
    kv_cache_mb: int = Field(512, ge=1, le=1_048_576, description="Memory budget of the paged KV cache.")
    block_size: int = Field(16, ge=1, le=256, description="Tokens per KV-cache block.")
    max_num_seqs: int = Field(64, ge=1, le=4096, description="Most sequences running in one step.")
    max_num_batched_tokens: int = Field(
        512, ge=16, le=1_048_576, description="Token budget of one engine step (chunked prefill)."
    )
    max_waiting: int = Field(256, ge=1, le=1_000_000, description="Bounded waiting queue; beyond it requests get 429.")
    max_loras: int = Field(8, ge=0, le=1024, description="Adapters kept loaded at once (LRU).")
    allow_adapters: bool = Field(True, description="Whether fine-tuned adapters of this model may be served.")
    engine_process: bool = Field(
        True,
        description="Run this model's engine core in a process of its own, so the API's work never holds the step loop's GIL (native engine only; false: a thread of the API process).",
    )


def _default_models() -> list[ModelSpec]:
    return [
        ModelSpec(name=DEFAULT_CHAT_NAME, source=DEFAULT_CHAT_SOURCE, kind="chat"),
        ModelSpec(name=DEFAULT_EMBEDDING_NAME, source=DEFAULT_EMBEDDING_SOURCE, kind="embedding"),
    ]


class Limits(BaseModel):
    """Bounds on what one request may ask for: every client number is checked against these before allocation."""

    model_config = {"extra": "forbid"}

    max_n: int = Field(8, ge=1, le=128)
    max_top_logprobs: int = Field(20, ge=0, le=20)
    max_stop_sequences: int = Field(4, ge=0, le=16)
    max_stop_length: int = Field(256, ge=1, le=4096)
    max_logit_bias: int = Field(300, ge=0, le=100_000)
    max_embedding_inputs: int = Field(2048, ge=1, le=100_000)
    max_messages: int = Field(1024, ge=1, le=100_000)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Larger JSON bodies get 413.")
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="Larger file uploads get 413.")
    max_classification_inputs: int = Field(64, ge=1, le=10_000, description="Texts in one /v1/classifications request.")
    max_classification_labels: int = Field(16, ge=2, le=1000, description="Labels in one /v1/classifications request.")
    max_not_found_per_minute: int = Field(
        120,
        ge=1,
        le=1_000_000,
        description="Not-found (404) answers one key may get per minute; past it the key gets 429 until the minute ends (no id scanning).",
    )
    max_schema_bytes: int = Field(
        64 * 1024,
        ge=256,
        le=4 * 1024 * 1024,
        description="Largest JSON schema (response_format, one tool's parameters), compact JSON.",
    )
    max_tools: int = Field(128, ge=1, le=1024, description="Tools in one request.")
    max_grammar_compile_s: float = Field(
        5.0, gt=0, le=120, description="A schema that takes longer to compile is refused (400)."
    )


class Settings(BaseSettings):
    """Every llmaas setting. Environment: LLMAAS_<NAME>; nested with `__` (LLMAAS_LIMITS__MAX_N=4)."""

    model_config = SettingsConfigDict(env_prefix="LLMAAS_", env_nested_delimiter="__", extra="forbid")

    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port the HTTP server binds (0 = any free port).")
    data_dir: Path = Field(
        Path("~/.llmaas"), description="SQLite file, uploaded files, adapters and model caches live here."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; unset = SQLite file in data_dir. postgresql+psycopg://… to scale out."
    )
    redis_url: str | None = Field(None, description="Set to share rate limits between replicas (redis://host:6379/0).")
    model_cache_dir: Path | None = Field(
        None, description="Where converted models (GGUF → safetensors) are cached; unset = data_dir/models."
    )
    files_url: str | None = Field(None, description="fsspec URL of the file/adapter store; unset = data_dir/files.")
    auth: bool = Field(True, description="Require API keys. --no-auth is for a purely local single-user run.")
    environment: Literal["dev", "production"] = Field(
        "production", description="dev relaxes nothing about auth; it only allows debug logging of content."
    )
    models: list[ModelSpec] = Field(default_factory=_default_models, description="Models to serve.")
    limits: Limits = Field(default_factory=Limits)
    default_max_tokens: int = Field(
        512, ge=1, le=1_048_576, description="max_tokens when a request leaves it out (capped by the context)."
    )
    start_worker: bool = Field(True, description="`llmaas serve` also runs one fine-tuning worker process.")
    worker_lease_s: float = Field(
        30.0,
        ge=0.5,
        le=3600,
        description="A fine-tuning worker's lease on its job; a worker silent this long is presumed dead and the job resumes from its last checkpoint elsewhere.",
    )
    worker_max_attempts: int = Field(
        3, ge=1, le=100, description="Workers lost on one fine-tuning job before the job fails."
    )
    worker_poll_s: float = Field(
        1.0, ge=0.05, le=60, description="How often an idle fine-tuning worker looks for queued jobs."
    )
    batch_runner: bool = Field(
        True,
        description="This server runs Batch API lines (at batch priority, in capacity interactive requests leave free); several replicas share batches through a lease in the database.",
    )
    batch_concurrency: int = Field(
        8,
        ge=1,
        le=1024,
        description="Batch lines one server keeps in flight at once (keep it well under a model's max_waiting).",
    )
    batch_lease_s: float = Field(
        30.0,
        ge=0.5,
        le=3600,
        description="A server's lease on the batch it runs; a server silent this long is presumed dead and another (or it, restarted) resumes the batch's remaining lines.",
    )
    batch_poll_s: float = Field(
        1.0, ge=0.05, le=60, description="How often an idle batch runner looks for batches to run."
    )
    batch_max_lines: int = Field(50_000, ge=1, le=1_000_000, description="Most requests in one batch input file.")
    batch_rpm: int | None = Field(
        None,
        ge=1,
        description="Batch lines per minute per project (the batch rate limit, separate from interactive rpm); unset = no limit.",
    )
    batch_tpm: int | None = Field(
        None,
        ge=1,
        description="Tokens per minute of batch lines per project (reserved as interactive requests reserve them, separate from interactive tpm); unset = no limit.",
    )
    finetune_eval_steps: int = Field(
        10,
        ge=0,
        le=1_000_000,
        description="With a validation file, every this many steps a fine-tuning job reports `valid_loss` on one validation batch (0 = only at checkpoints, which always evaluate the whole file).",
    )
    log_json: bool = Field(False, description="Structured JSON logs.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_content: bool = Field(False, description="Log prompts and completions (debugging only; never in production).")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; empty = CORS off.")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host header allowlist (DNS-rebinding guard); empty = any."
    )
    shutdown_grace_s: float = Field(30.0, ge=0, le=3600, description="How long SIGTERM waits for in-flight streams.")
    num_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads of each engine's forward pass; unset = measured at start and every 20 s of work: one, or every core this process may use (its CPU affinity and container CPU limit).",
    )
    responses_retention_days: int = Field(
        30,
        ge=0,
        le=36_500,
        description="Stored Responses API responses (the state behind previous_response_id) are kept this many days; 0 = until deleted.",
    )
    usage_flush_s: float = Field(1.0, gt=0, le=60, description="Usage records are written in batches at this interval.")

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(os.path.expanduser(str(v)))

    @model_validator(mode="after")
    def _check(self) -> Settings:
        names = [m.name for m in self.models]
        if len(names) != len(set(names)):
            raise ValueError(f"model names must be unique, got {names}")
        if self.log_content and self.environment == "production":
            raise ValueError("log_content=true logs prompts; it is refused unless environment=dev")
        return self

    # --- derived -------------------------------------------------------------------------------------

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'llmaas.db'}"

    @property
    def models_cache(self) -> Path:
        return Path(os.path.expanduser(str(self.model_cache_dir))) if self.model_cache_dir else self.data_dir / "models"

    @property
    def chat_models(self) -> list[ModelSpec]:
        return [m for m in self.models if m.kind == "chat"]

    @property
    def embedding_models(self) -> list[ModelSpec]:
        return [m for m in self.models if m.kind == "embedding"]


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from env, under the YAML/TOML file (if any), under explicit overrides (CLI flags)."""
    file_values: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            file_values = tomllib.loads(text)
        else:
            file_values = yaml.safe_load(text) or {}
        if not isinstance(file_values, dict):
            raise ValueError(f"{path}: the config file must be a mapping of settings")
    merged = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    return Settings(**merged)
