// Batches: upload a Batch API input file (JSONL of {custom_id, method, url, body}; the server checks it line by
// line), start a batch on its endpoint, watch each batch's progress bar, cancel it, download its output and errors.

import {listAll, post, request} from "../api.js";
import {field, fill, fmtInt, fmtTime, h, messageBox, showError, table} from "../dom.js";

export const ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"];
const ACTIVE = new Set(["validating", "in_progress", "finalizing", "cancelling"]);
const POLL_MS = 2000;

const badge = status => h("span", {class: `badge status-${status}`}, String(status || "unknown").replace(/_/g, " "));

/** The endpoint named by the first request of a batch input file, or "" when it names none we serve. */
export function endpointOf(text) {
  const first = text.split("\n").find(line => line.trim());
  try {
    const url = JSON.parse(first || "{}").url;
    return ENDPOINTS.includes(url) ? url : "";
  } catch {
    return "";
  }
}

/** Lines finished out of the total, as a fraction 0..1 (0 for an empty batch). */
export function progress(counts) {
  const total = counts?.total || 0;
  return total ? Math.min(1, ((counts.completed || 0) + (counts.failed || 0)) / total) : 0;
}

export async function render(root) {
  const fileInput = h("input", {type: "file", name: "file", accept: ".jsonl,application/jsonl,application/x-ndjson"});
  const endpointSelect = h("select", {name: "endpoint"}, ENDPOINTS.map(e => h("option", {value: e}, e)));
  const startBtn = h("button", {type: "submit", class: "primary", disabled: true}, "Upload and start");
  const slot = h("div", {class: "slot", "aria-live": "polite"});
  const listBody = h("div", {}, h("p", {class: "loading"}, "Loading batches…"));
  const form = h("form", {class: "card", "aria-labelledby": "batch-title"},
    h("h2", {id: "batch-title"}, "New batch"),
    h("p", {class: "hint"}, "A JSONL file, one request per line: {\"custom_id\": …, \"method\": \"POST\", \"url\": …, ",
      "\"body\": {…}}, every line on the same endpoint and model. Lines run below interactive traffic; results ",
      "arrive within 24 hours (usually much sooner)."),
    h("div", {class: "grid2"}, field("Input file", fileInput), field("Endpoint", endpointSelect)),
    slot, h("div", {class: "row"}, startBtn));
  fill(root, h("h1", {}, "Batches"), form, h("div", {class: "card"}, h("h2", {}, "Your batches"), listBody));

  fileInput.addEventListener("change", async () => {
    showError(slot, null);
    const file = fileInput.files[0];
    startBtn.disabled = !file;
    if (!file) return;
    const head = await file.slice(0, 1 << 20).text();
    const endpoint = endpointOf(head);
    if (endpoint) endpointSelect.value = endpoint;
  });

  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const file = fileInput.files[0];
    if (!file) return;
    startBtn.disabled = true;
    showError(slot, null);
    const data = new FormData();
    data.append("purpose", "batch");
    data.append("file", file, file.name);
    try {
      const uploaded = await request("POST", "/v1/files", {form: data});
      const batch = await post("/v1/batches", {input_file_id: uploaded.id, endpoint: endpointSelect.value,
        completion_window: "24h"});
      fill(slot, batch.status === "failed"
        ? messageBox("error", `The batch failed validation: ${errorText(batch)}`)
        : messageBox("ok", `Started ${batch.id} (${fmtInt(batch.request_counts.total)} requests).`));
      fileInput.value = "";
      await load();
    } catch (err) {
      showError(slot, err);
      startBtn.disabled = false;
    }
  });

  let timer = null, stopped = false;
  async function load() {
    clearTimeout(timer);
    let batches;
    try {
      batches = await listAll("/v1/batches", {limit: 50}, 2);
    } catch (err) {
      fill(listBody, messageBox("error", err.message));
      return;
    }
    if (stopped) return;
    fill(listBody, table([
      {label: "Batch", cell: b => h("code", {}, b.id)},
      {label: "Endpoint", cell: b => b.endpoint},
      {label: "Status", cell: b => badge(b.status)},
      {label: "Progress", cell: progressCell},
      {label: "Created", cell: b => fmtTime(b.created_at)},
      {label: "", cell: b => actions(b, load, slot)},
    ], batches, {empty: "No batches yet."}));
    if (batches.some(b => ACTIVE.has(b.status))) timer = setTimeout(load, POLL_MS);
  }

  await load();
  return () => { stopped = true; clearTimeout(timer); };
}

function errorText(batch) {
  const e = batch.errors?.data?.[0];
  return e ? `${e.line ? `line ${e.line}: ` : ""}${e.message}` : "no details";
}

function progressCell(b) {
  const c = b.request_counts || {};
  const bar = h("progress", {max: 1, value: progress(c), "aria-label": `${b.id} progress`});
  return h("span", {class: "batch-progress"}, bar,
    ` ${fmtInt((c.completed || 0) + (c.failed || 0))} / ${fmtInt(c.total)}`, c.failed ? ` (${fmtInt(c.failed)} failed)` : "");
}

function actions(b, reload, slot) {
  const buttons = [];
  if (b.status === "failed" && b.errors?.data?.length) buttons.push(h("span", {class: "hint"}, errorText(b)));
  if (b.output_file_id) buttons.push(downloadButton("Results", b.output_file_id, `${b.id}_output.jsonl`, slot));
  if (b.error_file_id) buttons.push(downloadButton("Errors", b.error_file_id, `${b.id}_errors.jsonl`, slot));
  if (ACTIVE.has(b.status) && b.status !== "cancelling") {
    buttons.push(h("button", {type: "button", class: "danger", onclick: async ev => {
      if (!window.confirm(`Cancel batch ${b.id}? Lines that finished are kept.`)) return;
      ev.target.disabled = true;
      try {
        await post(`/v1/batches/${encodeURIComponent(b.id)}/cancel`, {});
        await reload();
      } catch (err) {
        showError(slot, err);
        ev.target.disabled = false;
      }
    }}, "Cancel"));
  }
  return h("span", {class: "row"}, buttons);
}

function downloadButton(label, fileId, name, slot) {
  return h("button", {type: "button", onclick: async ev => {
    ev.target.disabled = true;
    try {
      // The content needs the key (a header), so it is fetched here and handed to the browser as a local file.
      const text = await request("GET", `/v1/files/${encodeURIComponent(fileId)}/content`);
      const url = URL.createObjectURL(new Blob([typeof text === "string" ? text : JSON.stringify(text)],
        {type: "application/jsonl"}));
      const a = h("a", {href: url, download: name});
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      showError(slot, err);
    } finally {
      ev.target.disabled = false;
    }
  }}, label);
}
