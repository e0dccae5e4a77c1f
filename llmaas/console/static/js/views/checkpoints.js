// A job's checkpoints on its page: metrics per checkpoint (OpenAI's names), and for classifiers the validation
// accuracy, the latest confusion matrix and a box that classifies a text with the fine-tuned model
// (/v1/classifications with the labels the job was validated on).

import {get, post} from "../api.js";
import {field, fill, h, messageBox, showError, table} from "../dom.js";

const num = v => (Number.isFinite(v) ? v.toFixed(4) : "—");
const pct = v => (Number.isFinite(v) ? `${(100 * v).toFixed(1)}%` : "—");

/** The newest checkpoint that carries a confusion matrix, or null. Checkpoints come newest first. */
export function latestMatrix(checkpoints) {
  const c = checkpoints.find(x => x.metrics?.valid_confusion_matrix?.labels);
  return c ? {step: c.step_number, ...c.metrics.valid_confusion_matrix} : null;
}

function matrixTable({labels, matrix}) {
  return h("div", {class: "table-wrap"}, h("table", {class: "confusion"},
    h("caption", {}, "Confusion matrix (rows: true label, columns: predicted)"),
    h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "true \\ predicted"), labels.map(l => h("th", {scope: "col"}, l)))),
    h("tbody", {}, labels.map((l, i) => h("tr", {}, h("th", {scope: "row"}, l),
      matrix[i].map((n, j) => h("td", {class: i === j ? "num hit" : "num"}, String(n))))))));
}

function tryBox(model, labels) {
  const input = h("textarea", {name: "classify", rows: 2, placeholder: "A text to classify"});
  const button = h("button", {type: "submit", class: "primary"}, "Classify");
  const out = h("div", {class: "slot", "aria-live": "polite"});
  const form = h("form", {class: "try-classifier"}, h("h3", {}, "Try it"), field("Text", input), h("div", {class: "row"}, button), out);
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    if (!input.value.trim()) return;
    button.disabled = true;
    try {
      const r = await post("/v1/classifications", {model, input: input.value, labels});
      const d = r.data[0];
      fill(out, h("p", {class: "classified"}, "Label: ", h("strong", {}, d.label)),
        table([{label: "Label", cell: ([l]) => l}, {label: "Probability", class: "num", cell: ([, p]) => pct(p)}],
          Object.entries(d.scores).sort((a, b) => b[1] - a[1])));
    } catch (err) {
      showError(out, err);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/** Fill `box` with the job's checkpoints; quiet when there are none yet. */
export async function renderCheckpoints(box, job) {
  let data;
  try {
    data = (await get(`/v1/fine_tuning/jobs/${encodeURIComponent(job.id)}/checkpoints`, {query: {limit: 100}})).data || [];
  } catch (err) {
    fill(box, messageBox("error", err.message));
    return;
  }
  const classifier = data.some(c => Number.isFinite(c.metrics?.valid_classification_accuracy));
  const columns = [
    {label: "Step", class: "num", cell: c => String(c.step_number)},
    {label: "Training loss", class: "num", cell: c => num(c.metrics?.train_loss)},
    {label: "Validation loss", class: "num", cell: c => num(c.metrics?.full_valid_loss)},
    {label: "Token accuracy", class: "num", cell: c => pct(c.metrics?.full_valid_mean_token_accuracy ?? c.metrics?.train_mean_token_accuracy)},
    classifier ? {label: "Validation accuracy", class: "num", cell: c => pct(c.metrics?.valid_classification_accuracy)} : null,
    {label: "Model", cell: c => h("code", {}, c.fine_tuned_model_checkpoint)},
  ].filter(Boolean);
  const matrix = latestMatrix(data);
  fill(box, table(columns, data, {empty: "No checkpoints yet (one per epoch)."}),
    matrix ? h("h3", {}, `Accuracy at step ${matrix.step}: `, h("span", {class: "accuracy"},
      pct(data.find(c => c.step_number === matrix.step).metrics.valid_classification_accuracy))) : null,
    matrix ? matrixTable(matrix) : null,
    matrix && job.status === "succeeded" && job.fine_tuned_model ? tryBox(job.fine_tuned_model, matrix.labels) : null);
}
