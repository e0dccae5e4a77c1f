"""llmaas: a self-hosted LLM as a Service (OpenAI-compatible serving, LoRA fine-tuning, per-tenant metering)."""

__version__ = "0.1.0"
