// Labeled text for classifiers: a CSV or JSONL of `text,label` rows → chat-format fine-tuning data.
// Each row becomes {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": label}]}, the
// format /v1/classifications scores labels on. Pure functions; the server validates the uploaded JSONL again.

export const MAX_LABELS = 16; // the server's default limits.max_classification_labels
const MAX_ERRORS = 50;

/** The rows of a CSV text (RFC 4180: quoted fields may hold commas, quotes as "" and newlines), with line numbers. */
export function parseCsv(text) {
  const rows = [];
  let row = [], cell = "", quoted = false, line = 1, start = 1, i = 0;
  const endCell = () => { row.push(cell); cell = ""; };
  const endRow = () => { endCell(); rows.push({line: start, cells: row}); row = []; start = line; };
  for (; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i++; }
      else if (c === '"') quoted = false;
      else { if (c === "\n") line++; cell += c; }
    } else if (c === '"' && cell === "") quoted = true;
    else if (c === ",") endCell();
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      line++;
      endRow();
      start = line;
    } else cell += c;
  }
  if (cell !== "" || row.length) endRow();
  return rows.filter(r => r.cells.some(x => x.trim() !== ""));
}

function fromCsv(text) {
  const rows = [], errors = [];
  const table = parseCsv(text);
  const first = table[0]?.cells.map(c => c.trim().toLowerCase());
  const header = first && first.includes("text") && first.includes("label");
  const ti = header ? first.indexOf("text") : 0, li = header ? first.indexOf("label") : 1;
  for (const r of header ? table.slice(1) : table) {
    const text = r.cells[ti], label = (r.cells[li] ?? "").trim();
    if (typeof text !== "string" || !text.trim()) errors.push({line: r.line, message: "the text is empty"});
    else if (!label) errors.push({line: r.line, message: "the label is empty (expected text,label)"});
    else rows.push({text, label});
  }
  return {rows, errors};
}

function fromJsonl(text) {
  const rows = [], errors = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    if (!raw.trim()) return;
    let obj;
    try { obj = JSON.parse(raw); } catch (err) { errors.push({line: i + 1, message: `not valid JSON (${err.message})`}); return; }
    if (typeof obj?.text !== "string" || !obj.text.trim()) errors.push({line: i + 1, message: "\"text\" must be a non-empty string"});
    else if (typeof obj.label !== "string" || !obj.label.trim()) errors.push({line: i + 1, message: "\"label\" must be a non-empty string"});
    else rows.push({text: obj.text, label: obj.label.trim()});
  });
  return {rows, errors};
}

/** parseLabeled(text, filename) -> {rows: [{text, label}], errors: [{line, message}], more}. */
export function parseLabeled(text, filename = "") {
  const jsonl = /\.jsonl?$/i.test(filename) || (!/\.csv$/i.test(filename) && text.trimStart().startsWith("{"));
  const {rows, errors} = jsonl ? fromJsonl(text) : fromCsv(text);
  if (!rows.length && !errors.length) errors.push({line: 0, message: "the file is empty"});
  const labels = new Set(rows.map(r => r.label));
  if (rows.length && labels.size < 2) errors.push({line: 0, message: "a classifier needs at least two different labels"});
  if (labels.size > MAX_LABELS) errors.push({line: 0, message: `at most ${MAX_LABELS} labels (found ${labels.size})`});
  return {rows, errors: errors.slice(0, MAX_ERRORS), more: Math.max(0, errors.length - MAX_ERRORS)};
}

/** [[label, count]], most frequent first (ties by label). */
export function labelCounts(rows) {
  const counts = new Map();
  for (const r of rows) counts.set(r.label, (counts.get(r.label) || 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
}

/** {train, valid}: every 5th row of each label is held out for validation (labels with fewer than 5 rows: none). */
export function splitRows(rows) {
  const seen = new Map(), train = [], valid = [];
  for (const r of rows) {
    const n = (seen.get(r.label) || 0) + 1;
    seen.set(r.label, n);
    (n % 5 === 0 ? valid : train).push(r);
  }
  return {train, valid};
}

/** Chat-format JSONL: the user says the text, the assistant answers the label. */
export function toChatJsonl(rows) {
  return rows.map(r => JSON.stringify({messages: [{role: "user", content: r.text}, {role: "assistant", content: r.label}]})).join("\n") + "\n";
}
