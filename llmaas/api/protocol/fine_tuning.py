"""OpenAI's fine-tuning job request, field for field, plus llmaas's LoRA extension (`method.lora`); the job, event and
checkpoint objects it answers with.

Methods: `supervised` and `dpo` (with `beta`); `reinforcement` is refused with a 400. Every hyperparameter is
bounded here (absurd values are a 400 before a job exists); `resolve()` turns OpenAI's "auto" into concrete numbers,
stored with the job, except `n_epochs`: "auto" stays until the worker has counted the training file
(`training/auto.py`: OpenAI's rule, small files get more epochs). No I/O: the serving layer checks models and files.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from llmaas.api.protocol.common import OpenAIBaseModel, ResponseModel, RowObject, StrictModel
from llmaas.engine.types import LORA_MODULES
from llmaas.errors import InvalidRequest

# LoRA may target these Llama-family linear layers (what PEFT saves and the engine's LoRA applies).
LORA_TARGETS = LORA_MODULES
AUTO_BATCH_SIZE, AUTO_LR_MULTIPLIER, AUTO_BETA = 4, 1.0, 0.1
BASE_LEARNING_RATE = 2e-4  # × learning_rate_multiplier (a common LoRA rate)

Auto = Literal["auto"]


class Hyperparameters(OpenAIBaseModel):
    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = Field(
        "auto", description="Passes over the training file (auto: 3, more for small files)."
    )
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = Field("auto", description="Examples per step (auto = 4).")
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = Field(
        "auto", description=f"× the base LoRA learning rate {BASE_LEARNING_RATE} (auto = 1)."
    )


class LoraParams(OpenAIBaseModel):
    """Extension: the LoRA adapter's shape."""

    rank: int = Field(8, ge=1, le=256)
    alpha: int = Field(16, ge=1, le=4096)
    dropout: float = Field(0.0, ge=0.0, le=0.9)
    target_modules: Annotated[list[Literal[LORA_TARGETS]], Field(min_length=1, max_length=len(LORA_TARGETS))] | None = (  # type: ignore[valid-type]
        Field(None, description=f"Subset of {', '.join(LORA_TARGETS)} (default: all).")
    )


class DpoHyperparameters(Hyperparameters):
    beta: Auto | Annotated[float, Field(gt=0, le=2)] = Field(
        "auto", description=f"How far the model may move from the base (auto = {AUTO_BETA})."
    )


class Supervised(OpenAIBaseModel):
    hyperparameters: Hyperparameters | None = None


class Dpo(StrictModel):
    hyperparameters: DpoHyperparameters | None = None


class Method(OpenAIBaseModel):
    type: Literal["supervised", "dpo", "reinforcement"] = "supervised"
    supervised: Supervised | None = None
    dpo: Dpo | None = None
    reinforcement: dict[str, Any] | None = None
    lora: LoraParams | None = Field(None, description="Extension: rank / alpha / dropout / target_modules.")


class FineTuningJobCreate(OpenAIBaseModel):
    model: str = Field(min_length=1, max_length=128, description="A base chat model served here.")
    training_file: str = Field(
        min_length=1, max_length=64, description="Id of an uploaded file with purpose fine-tune."
    )
    validation_file: str | None = Field(None, min_length=1, max_length=64)
    suffix: str | None = Field(
        None, max_length=64, pattern=r"^[A-Za-z0-9_.\-]*$", description="Up to 64 characters in the model name."
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    hyperparameters: Hyperparameters | None = Field(
        None, description="Deprecated by OpenAI in favour of method; both work."
    )
    method: Method | None = None
    integrations: Annotated[list[Any], Field(max_length=0)] | None = Field(
        None, description="Not supported (must be empty)."
    )
    metadata: Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)] | None = None

    def resolve(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(hyperparameters with no "auto" left but n_epochs, the method as stored and shown)."""
        method = self.method or Method()
        if method.type == "reinforcement":
            raise InvalidRequest(
                "Fine-tuning method 'reinforcement' is not supported here; use 'supervised' or 'dpo'.",
                param="method.type",
            )
        hp: Hyperparameters = self.hyperparameters or Hyperparameters()
        chosen = method.dpo if method.type == "dpo" else method.supervised
        if chosen is not None and chosen.hyperparameters is not None:
            hp = chosen.hyperparameters
        batch_size = AUTO_BATCH_SIZE if hp.batch_size == "auto" else hp.batch_size
        multiplier = AUTO_LR_MULTIPLIER if hp.learning_rate_multiplier == "auto" else float(hp.learning_rate_multiplier)
        resolved: dict[str, Any] = {
            "n_epochs": hp.n_epochs,
            "batch_size": batch_size,
            "learning_rate_multiplier": multiplier,
            "learning_rate": BASE_LEARNING_RATE * multiplier,
        }
        shown = {k: resolved[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}
        if method.type == "dpo":
            beta = getattr(hp, "beta", "auto")
            resolved["beta"] = shown["beta"] = AUTO_BETA if beta == "auto" else float(beta)
        lora = method.lora or LoraParams()
        lora_dict = {
            "rank": lora.rank,
            "alpha": lora.alpha,
            "dropout": lora.dropout,
            "target_modules": list(lora.target_modules or LORA_TARGETS),
        }
        return resolved, {"type": method.type, method.type: {"hyperparameters": shown}, "lora": lora_dict}


# --- responses (OpenAI's shapes, field for field and in OpenAI's order) --------------------------------------


class JobHyperparameters(ResponseModel):
    n_epochs: int | Auto  # "auto" until the worker has counted the training file
    batch_size: int
    learning_rate_multiplier: float


class FineTuningJobObject(ResponseModel):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    id: str
    model: str
    created_at: int
    finished_at: int | None
    fine_tuned_model: str | None
    organization_id: str = Field(description="The job's project.")
    result_files: list[str] = Field(description="The step-metrics CSV, once the job succeeded.")
    status: str
    validation_file: str | None
    training_file: str
    hyperparameters: JobHyperparameters
    trained_tokens: int | None
    error: dict[str, Any] | None = Field(description="{code, message, param} of a failed job.")
    user_provided_suffix: str | None
    seed: int
    estimated_finish: int | None = None
    integrations: list[Any] = Field(default_factory=list)
    metadata: dict[str, str] | None = None
    method: dict[str, Any] = Field(description="The method as resolved: type, its hyperparameters, and lora.")


class FineTuningJobList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobObject]
    has_more: bool


class FineTuningEventObject(RowObject):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: str
    message: str
    data: dict[str, Any] | None
    type: str


class FineTuningEventList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningEventObject]
    has_more: bool


class FineTuningCheckpointObject(RowObject):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str = Field(validation_alias="job_id")  # the row's `job_id`
    step_number: int
    metrics: dict[str, Any]


class FineTuningCheckpointList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningCheckpointObject]
    has_more: bool
    first_id: str | None
    last_id: str | None
