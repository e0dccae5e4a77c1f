// Classifier: train a text classifier from a CSV or JSONL of `text,label` rows without writing any code.
// Shows the label counts, turns the rows into chat-format training and validation files (every 5th row of each
// label is held out), uploads both and starts a fine-tuning job; the job page then shows accuracy per checkpoint,
// a confusion matrix, and a box that calls /v1/classifications on the new model.

import {post, request} from "../api.js";
import {field, fill, fmtInt, h, messageBox, showError, table} from "../dom.js";
import {decodeUtf8} from "../jsonl.js";
import {labelCounts, parseLabeled, splitRows, toChatJsonl} from "../labeled.js";
import {listModels} from "../models.js";

const MAX_CHECK = 64 * 1024 * 1024;

export async function render(root, ctx) {
  const fileInput = h("input", {type: "file", name: "labeled", accept: ".csv,.jsonl,text/csv,application/jsonl"});
  const checkSlot = h("div", {class: "slot", "aria-live": "polite"});
  const modelSelect = h("select", {name: "model", required: true});
  const suffix = h("input", {type: "text", name: "suffix", maxlength: 64, pattern: "[A-Za-z0-9_.\\-]*", value: "classifier"});
  const epochs = h("input", {type: "number", name: "n_epochs", min: 1, max: 50, step: 1, placeholder: "auto"});
  const lr = h("input", {type: "number", name: "learning_rate_multiplier", min: 0.01, max: 100, step: "any", placeholder: "auto"});
  const seed = h("input", {type: "number", name: "seed", min: 0, max: 2147483647, step: 1, placeholder: "random"});
  const startBtn = h("button", {type: "submit", class: "primary", disabled: true}, "Train classifier");
  const startSlot = h("div", {class: "slot"});
  const form = h("form", {class: "card", "aria-labelledby": "clf-title"},
    h("h1", {id: "clf-title"}, "Train a classifier"),
    h("p", {class: "hint"}, "A CSV with the columns text,label (a header row is optional), or JSONL lines ",
      "{\"text\": …, \"label\": …}. Each row teaches the model to answer the text with its label; every 5th row of ",
      "each label is kept aside to measure accuracy."),
    field("Labeled file (CSV or JSONL)", fileInput), checkSlot,
    h("div", {class: "grid2"}, field("Base model", modelSelect),
      field("Suffix (optional)", suffix, "Letters, digits, ., - and _; part of the new model's name."),
      field("Epochs (optional)", epochs), field("Learning rate multiplier (optional)", lr),
      field("Seed (optional)", seed, "The same seed, file and settings train the same model again.")),
    startSlot, h("div", {class: "row"}, startBtn));
  fill(root, form);

  let parsed = null, name = "labeled";
  fileInput.addEventListener("change", async () => {
    startBtn.disabled = true;
    parsed = null;
    showError(startSlot, null);
    const file = fileInput.files[0];
    if (!file) { fill(checkSlot); return; }
    if (file.size > MAX_CHECK) { fill(checkSlot, messageBox("error", "The file is too big to convert in the browser.")); return; }
    const decoded = decodeUtf8(new Uint8Array(await file.arrayBuffer()));
    const result = decoded.error ? {rows: [], errors: [decoded.error], more: 0} : parseLabeled(decoded.text, file.name);
    if (result.errors.length) {
      fill(checkSlot, h("div", {class: "msgbox error", role: "alert"},
        h("p", {}, "Fix the file and choose it again:"),
        h("ul", {class: "line-errors"}, result.errors.map(e => h("li", {}, e.line ? h("strong", {}, `Line ${e.line}: `) : null, e.message))),
        result.more ? h("p", {}, `…and ${result.more} more.`) : null));
      return;
    }
    parsed = result.rows;
    name = file.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_.-]+/g, "-").slice(0, 60) || "labeled";
    const {train, valid} = splitRows(parsed);
    fill(checkSlot,
      messageBox("ok", `${fmtInt(parsed.length)} rows: ${fmtInt(train.length)} to train on, ${fmtInt(valid.length)} to measure accuracy.`),
      table([{label: "Label", cell: ([label]) => label}, {label: "Rows", class: "num", cell: ([, n]) => fmtInt(n)}],
        labelCounts(parsed), {caption: "Label counts"}));
    startBtn.disabled = false;
  });

  async function upload(rows, filename) {
    const data = new FormData();
    data.append("purpose", "fine-tune");
    data.append("file", new Blob([toChatJsonl(rows)], {type: "application/jsonl"}), filename);
    return (await request("POST", "/v1/files", {form: data})).id;
  }

  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    if (!parsed) return;
    startBtn.disabled = true;
    showError(startSlot, null);
    try {
      const {train, valid} = splitRows(parsed);
      const body = {model: modelSelect.value, training_file: await upload(train, `${name}-train.jsonl`)};
      if (valid.length) body.validation_file = await upload(valid, `${name}-valid.jsonl`);
      if (suffix.value.trim()) body.suffix = suffix.value.trim();
      const hp = {};
      if (epochs.value) hp.n_epochs = Math.round(Number(epochs.value));
      if (lr.value) hp.learning_rate_multiplier = Number(lr.value);
      if (Object.keys(hp).length) body.hyperparameters = hp;
      if (seed.value) body.seed = Math.round(Number(seed.value));
      const job = await post("/v1/fine_tuning/jobs", body);
      ctx.navigate("fine-tuning", job.id);
    } catch (err) {
      showError(startSlot, err);
      startBtn.disabled = false;
    }
  });

  const models = await listModels().catch(err => { showError(startSlot, err); return []; });
  const bases = models.filter(m => m.kind === "chat" && !m.fineTuned);
  fill(modelSelect, bases.length ? bases.map(m => h("option", {value: m.id}, m.id)) : h("option", {value: ""}, "No base chat model"));
}
