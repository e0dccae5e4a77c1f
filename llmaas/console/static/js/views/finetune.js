// Fine-tuning: upload a JSONL file (checked here line by line, then by the server), start a LoRA job on a base
// model, watch its status and live loss curves from the job's events, its checkpoints (views/checkpoints.js),
// cancel it, open the result in the playground.

import {get, listAll, post, request} from "../api.js";
import {lineChart} from "../chart.js";
import {field, fill, fmtBytes, fmtInt, fmtTime, h, messageBox, showError, table} from "../dom.js";
import {decodeUtf8, validateJsonl} from "../jsonl.js";
import {listModels} from "../models.js";
import {renderCheckpoints} from "./checkpoints.js";

const ACTIVE = new Set(["validating_files", "queued", "running"]);
const POLL_MS = 2000;
const MAX_UPLOAD_CHECK = 64 * 1024 * 1024; // bigger files skip the in-browser check; the server still checks

export async function render(root, ctx, sub) {
  return sub ? renderJob(root, ctx, sub) : renderList(root, ctx);
}

const badge = status => h("span", {class: `badge status-${status}`}, String(status || "unknown").replace(/_/g, " "));

// --- list: upload, start, jobs -----------------------------------------------------------------------------

async function renderList(root, ctx) {
  const fileInput = h("input", {type: "file", name: "file", accept: ".jsonl,application/jsonl,application/x-ndjson"});
  const checkSlot = h("div", {class: "slot", "aria-live": "polite"});
  const uploadBtn = h("button", {type: "submit", class: "primary", disabled: true}, "Upload");
  const uploadSlot = h("div", {class: "slot"});
  const filesBody = h("div");
  const trainSelect = h("select", {name: "training_file", required: true});
  const validSelect = h("select", {name: "validation_file"});
  const modelSelect = h("select", {name: "model", required: true});
  const suffix = h("input", {type: "text", name: "suffix", maxlength: 64, pattern: "[A-Za-z0-9_.\\-]*", placeholder: "my-model"});
  const epochs = h("input", {type: "number", name: "n_epochs", min: 1, max: 50, step: 1, placeholder: "auto"});
  const seed = h("input", {type: "number", name: "seed", min: 0, max: 2147483647, step: 1, placeholder: "random"});
  const startBtn = h("button", {type: "submit", class: "primary"}, "Start fine-tuning");
  const startSlot = h("div", {class: "slot"});
  const jobsBody = h("div", {}, h("p", {class: "loading"}, "Loading jobs…"));

  const uploadForm = h("form", {class: "card", "aria-labelledby": "up-title"},
    h("h2", {id: "up-title"}, "1. Upload training data"),
    h("p", {class: "hint"}, "A JSONL file: one example per line, each {\"messages\": [{\"role\": \"user\", \"content\": …}, ",
      "{\"role\": \"assistant\", \"content\": …}]} (or {\"prompt\": …, \"completion\": …}). ",
      "It is checked here first, then by the server."),
    field("JSONL file", fileInput), checkSlot, h("div", {class: "row"}, uploadBtn), uploadSlot,
    h("h3", {}, "Your files"), filesBody);
  const startForm = h("form", {class: "card", "aria-labelledby": "start-title"},
    h("h2", {id: "start-title"}, "2. Start a job"),
    h("div", {class: "grid2"},
      field("Training file", trainSelect), field("Validation file (optional)", validSelect),
      field("Base model", modelSelect), field("Suffix (optional)", suffix, "Letters, digits, ., - and _; part of the new model's name."),
      field("Epochs (optional)", epochs),
      field("Seed (optional)", seed, "The same seed, file and settings train the same model again.")),
    startSlot, h("div", {class: "row"}, startBtn));
  fill(root, h("h1", {}, "Fine-tuning"), h("div", {class: "grid2 top"}, uploadForm, startForm),
    h("div", {class: "card"}, h("h2", {}, "Jobs"), jobsBody));

  // --- upload ---------------------------------------------------------------------------------------------
  fileInput.addEventListener("change", async () => {
    uploadBtn.disabled = true;
    showError(uploadSlot, null);
    const file = fileInput.files[0];
    if (!file) { fill(checkSlot); return; }
    if (file.size > MAX_UPLOAD_CHECK) {
      fill(checkSlot, messageBox("note", `${fmtBytes(file.size)}: too big to check in the browser; the server will check it.`));
      uploadBtn.disabled = false;
      return;
    }
    const decoded = decodeUtf8(new Uint8Array(await file.arrayBuffer()));
    const {examples, errors, more} = decoded.error ? {examples: 0, errors: [decoded.error], more: 0} : validateJsonl(decoded.text);
    if (!errors.length) {
      fill(checkSlot, messageBox("ok", `Looks good: ${fmtInt(examples)} example${examples === 1 ? "" : "s"}, ${fmtBytes(file.size)}.`));
      uploadBtn.disabled = false;
      return;
    }
    fill(checkSlot, h("div", {class: "msgbox error", role: "alert"},
      h("p", {}, `${errors.length + more} problem${errors.length + more === 1 ? "" : "s"} found; fix the file and choose it again:`),
      h("ul", {class: "line-errors"}, errors.map(e => h("li", {}, e.line ? h("strong", {}, `Line ${e.line}: `) : null, e.message))),
      more ? h("p", {}, `…and ${more} more.`) : null));
  });
  uploadForm.addEventListener("submit", async ev => {
    ev.preventDefault();
    const file = fileInput.files[0];
    if (!file) return;
    uploadBtn.disabled = true;
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", file, file.name);
    try {
      const uploaded = await request("POST", "/v1/files", {form});
      fill(uploadSlot, messageBox("ok", `Uploaded as ${uploaded.id}.`));
      fileInput.value = "";
      fill(checkSlot);
      await loadFiles(uploaded.id);
    } catch (err) {
      showError(uploadSlot, err);
      uploadBtn.disabled = false;
    }
  });

  async function loadFiles(select) {
    let files;
    try {
      files = (await listAll("/v1/files", {purpose: "fine-tune"}, 5)).filter(f => !f.purpose || f.purpose === "fine-tune");
    } catch (err) {
      fill(filesBody, messageBox("error", err.message));
      return;
    }
    fill(filesBody, table([
      {label: "File", cell: f => h("code", {}, f.id)},
      {label: "Name", cell: f => f.filename || ""},
      {label: "Size", class: "num", cell: f => fmtBytes(f.bytes)},
      {label: "Uploaded", cell: f => fmtTime(f.created_at)},
    ], files, {empty: "No files uploaded yet."}));
    const opt = f => h("option", {value: f.id}, `${f.filename || f.id} (${f.id})`);
    const keepTrain = select || trainSelect.value, keepValid = validSelect.value;
    fill(trainSelect, files.length ? files.map(opt) : h("option", {value: ""}, "Upload a file first"));
    fill(validSelect, h("option", {value: ""}, "None"), files.map(opt));
    if (files.some(f => f.id === keepTrain)) trainSelect.value = keepTrain;
    if (files.some(f => f.id === keepValid)) validSelect.value = keepValid;
  }

  // --- start ----------------------------------------------------------------------------------------------
  startForm.addEventListener("submit", async ev => {
    ev.preventDefault();
    showError(startSlot, null);
    if (!trainSelect.value) { showError(startSlot, new Error("Upload a training file first.")); return; }
    const body = {model: modelSelect.value, training_file: trainSelect.value};
    if (validSelect.value) body.validation_file = validSelect.value;
    if (suffix.value.trim()) body.suffix = suffix.value.trim();
    if (epochs.value) body.hyperparameters = {n_epochs: Math.round(Number(epochs.value))};
    if (seed.value) body.seed = Math.round(Number(seed.value));
    startBtn.disabled = true;
    try {
      const job = await post("/v1/fine_tuning/jobs", body);
      ctx.navigate("fine-tuning", job.id);
    } catch (err) {
      showError(startSlot, err);
    } finally {
      startBtn.disabled = false;
    }
  });

  // --- jobs -----------------------------------------------------------------------------------------------
  let timer = null;
  async function loadJobs() {
    let jobs;
    try {
      jobs = await listAll("/v1/fine_tuning/jobs", {limit: 50}, 2);
    } catch (err) {
      fill(jobsBody, messageBox("error", err.message));
      return;
    }
    fill(jobsBody, table([
      {label: "Job", cell: j => h("a", {href: `#/fine-tuning/${encodeURIComponent(j.id)}`}, j.id)},
      {label: "Base model", cell: j => j.model},
      {label: "Status", cell: j => badge(j.status)},
      {label: "Fine-tuned model", cell: j => j.fine_tuned_model ? h("code", {}, j.fine_tuned_model) : "—"},
      {label: "Created", cell: j => fmtTime(j.created_at)},
    ], jobs, {empty: "No fine-tuning jobs yet."}));
    clearTimeout(timer);
    if (jobs.some(j => ACTIVE.has(j.status))) timer = setTimeout(loadJobs, POLL_MS * 2);
  }

  const [models] = await Promise.all([listModels().catch(err => { showError(startSlot, err); return []; }),
    loadFiles(), loadJobs()]);
  const bases = models.filter(m => m.kind === "chat" && !m.fineTuned);
  fill(modelSelect, bases.length ? bases.map(m => h("option", {value: m.id}, m.id)) : h("option", {value: ""}, "No base chat model"));
  return () => clearTimeout(timer);
}

// --- one job: status, loss curves, events, cancel ----------------------------------------------------------

/** Loss points from metrics events (OpenAI: type "metrics", data {step, train_loss, valid_loss}). */
export function lossSeries(events) {
  const train = new Map(), valid = new Map(); // step -> loss; the first event of a step wins (the per-step one)
  for (const e of events) {
    const d = e.data;
    if (!d || typeof d !== "object" || !Number.isFinite(d.step)) continue;
    if (Number.isFinite(d.train_loss) && !train.has(d.step)) train.set(d.step, d.train_loss);
    const v = d.valid_loss ?? d.full_valid_loss ?? d.validation_loss;
    if (Number.isFinite(v) && !valid.has(d.step)) valid.set(d.step, v);
  }
  return {train: [...train], valid: [...valid]};
}

async function renderJob(root, ctx, jobId) {
  const head = h("div", {class: "card-head"});
  const details = h("dl", {class: "facts"});
  const errorSlot = h("div", {class: "slot"});
  const actions = h("div", {class: "row"});
  const chartBox = h("div", {class: "chart-box"});
  const eventsList = h("ol", {class: "events", reversed: true});
  const checkpointsBox = h("div");
  fill(root,
    h("p", {}, h("a", {href: "#/fine-tuning"}, "← All fine-tuning jobs")),
    h("div", {class: "card"}, head, details, errorSlot, actions),
    h("div", {class: "card"}, h("h2", {}, "Loss"), chartBox),
    h("div", {class: "card"}, h("h2", {}, "Checkpoints"), checkpointsBox),
    h("div", {class: "card"}, h("h2", {}, "Events"), eventsList));

  const events = new Map(); // id -> {event, seq}, merged across polls; seq grows from older to newer
  let seq = 0, timer = null, stopped = false;

  async function pollEvents() {
    // The server lists newest first: page back until a page reaches events we already have.
    const fresh = [];
    let after = null;
    for (let page = 0; page < 50; page++) {
      const resp = await get(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/events`, {query: {limit: 100, after}});
      const data = Array.isArray(resp?.data) ? resp.data : [];
      let seen = false;
      for (const e of data) { if (events.has(e.id)) seen = true; else fresh.push(e); }
      if (seen || !resp.has_more || !data.length) break;
      after = data[data.length - 1].id;
    }
    for (const e of fresh.reverse()) events.set(e.id, {event: e, seq: seq++});
  }

  function show(job) {
    fill(head, h("h1", {}, "Job ", h("code", {}, job.id)), badge(job.status));
    const hp = job.hyperparameters || {};
    const fact = (k, v) => [h("dt", {}, k), h("dd", {}, v ?? "—")];
    fill(details,
      fact("Base model", job.model),
      fact("Training file", job.training_file),
      fact("Validation file", job.validation_file || "none"),
      fact("Created", fmtTime(job.created_at)),
      fact("Finished", fmtTime(job.finished_at)),
      fact("Hyperparameters", Object.entries(hp).map(([k, v]) => `${k}=${v}`).join(", ") || "defaults"),
      fact("Trained tokens", job.trained_tokens ? fmtInt(job.trained_tokens) : "—"),
      fact("Fine-tuned model", job.fine_tuned_model ? h("code", {}, job.fine_tuned_model) : "—"));
    if (job.error && (job.error.message || job.error.code)) {
      const where = job.error.param ? ` (${job.error.param})` : "";
      fill(errorSlot, messageBox("error", `The job failed${where}: ${job.error.message || job.error.code}`));
    } else if (job.status === "cancelled") {
      fill(errorSlot, messageBox("note", "This job was cancelled."));
    } else fill(errorSlot);
    fill(actions,
      ACTIVE.has(job.status) ? h("button", {type: "button", class: "danger", onclick: cancel}, "Cancel job") : null,
      job.status === "succeeded" && job.fine_tuned_model
        ? h("button", {type: "button", class: "primary",
          onclick: () => { ctx.prefs.model = job.fine_tuned_model; ctx.navigate("playground"); }}, "Open in playground")
        : null);
    const all = [...events.values()].sort((a, b) => (a.event.created_at - b.event.created_at) || a.seq - b.seq).map(x => x.event);
    const {train, valid} = lossSeries(all);
    fill(chartBox, lineChart([
      {name: "training loss", class: "s1", points: train},
      {name: "validation loss", class: "s2", points: valid},
    ], {label: `Loss by step for ${job.id}`, xLabel: "step", width: Math.max(320, Math.min(900, chartBox.clientWidth || 640)),
      height: chartBox.clientWidth > 700 ? 300 : 240}));
    const messages = all.filter(e => e.message).slice(-100).reverse();
    fill(eventsList, messages.length ? messages.map(e => h("li", {class: `level-${e.level || "info"}`},
      h("time", {}, fmtTime(e.created_at)), " ", e.message)) : h("li", {class: "empty"}, "No events yet."));
  }

  async function refresh() {
    if (stopped) return;
    try {
      const job = await get(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`);
      await pollEvents().catch(err => showError(errorSlot, err));
      if (stopped) return;
      show(job);
      await renderCheckpoints(checkpointsBox, job); // once more after the job finishes, then left alone
      if (ACTIVE.has(job.status) && !stopped) timer = setTimeout(refresh, POLL_MS);
    } catch (err) {
      fill(errorSlot, messageBox("error", err.message));
      if (!stopped && err.status !== 404 && err.status !== 401) timer = setTimeout(refresh, POLL_MS * 3);
    }
  }

  async function cancel(ev) {
    if (!window.confirm(`Cancel fine-tuning job ${jobId}?`)) return;
    ev.target.disabled = true;
    try {
      show(await post(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/cancel`, {}));
    } catch (err) {
      fill(errorSlot, messageBox("error", err.message));
      ev.target.disabled = false;
    }
  }

  await refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
