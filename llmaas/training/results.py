"""A finished job's result file: the step-metrics CSV OpenAI attaches to `result_files`, built from the job's events.

Columns are OpenAI's: `step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy` (a cell is empty where
a step had no validation). Rows come from the `metrics` events in the database, so the steps of earlier workers
survive a resume; a step trained twice (after a resume) keeps its last numbers, and a checkpoint's full validation
fills that step's validation cells. The file is an ordinary file of the job's project (purpose
`fine-tune-results`) whose id follows from the job's, so the job row needs no extra column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from llmaas.store import files as files_db
from llmaas.store import training as training_db
from llmaas.store.blobs import BlobStore
from llmaas.store.training import FineTuningJob
from llmaas.training.jobs import result_file_id

COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
PURPOSE = "fine-tune-results"


def step_rows(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metrics event data (oldest first) → one row per step, in step order."""
    rows: dict[int, dict[str, Any]] = {}
    for data in events:
        step = data.get("step")
        if not isinstance(step, int):
            continue
        if "total_steps" in data:  # a step's own event
            rows[step] = {
                "step": step,
                "train_loss": data.get("train_loss"),
                "train_accuracy": data.get("train_mean_token_accuracy"),
                "valid_loss": data.get("valid_loss"),
                "valid_mean_token_accuracy": data.get("valid_mean_token_accuracy"),
            }
        elif step in rows and rows[step]["valid_loss"] is None:  # a checkpoint's: its full validation
            rows[step]["valid_loss"] = data.get("full_valid_loss")
            rows[step]["valid_mean_token_accuracy"] = data.get("full_valid_mean_token_accuracy")
    return [rows[k] for k in sorted(rows)]


def metrics_csv(rows: Iterable[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in COLUMNS])
    return out.getvalue().encode()


def write_result_file(session: Session, blobs: BlobStore, job: FineTuningJob) -> str:
    """Store the job's step-metrics CSV as a file of its project; its id."""
    data = metrics_csv(step_rows(training_db.metrics_data(session, job)))
    file_id = result_file_id(job.id)
    # written already by a worker that died before the job succeeded: replaced
    files_db.forget_file(session, file_id)
    files_db.create_file(
        session,
        blobs,
        io.BytesIO(data),
        project_id=job.project_id,
        purpose=PURPOSE,
        filename="step_metrics.csv",
        file_id=file_id,
    )
    return file_id
