// Small DOM helpers. Data only ever enters the page as text (textContent / text nodes / properties),
// never as HTML: there is no innerHTML anywhere in the console.

const PROPS = new Set(["value", "checked", "disabled", "selected", "hidden", "multiple", "required", "readOnly"]);

/** h("button", {class: "primary", onclick: fn}, "Send") -> element. Strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = String(v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k.startsWith("on") || k === "style" || k === "href" && /^\s*javascript:/i.test(v)) {
      throw new Error(`refusing attribute ${k}`); // handlers and styles come from code, never from strings
    } else if (PROPS.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A <label> wrapping a caption and a control, so the control has an accessible name. */
export function field(caption, control, hint) {
  return h("label", {class: "field"}, h("span", {class: "caption"}, caption), control,
    hint ? h("small", {class: "hint"}, hint) : null);
}

/** A message box for errors and notes (role=alert for errors so screen readers announce them). */
export function messageBox(kind, text) {
  return h("div", {class: `msgbox ${kind}`, role: kind === "error" ? "alert" : "status"}, text);
}

export function showError(slot, err) {
  fill(slot, err ? messageBox("error", err.message || String(err)) : null);
}

export function fmtInt(n) {
  return n === null || n === undefined || Number.isNaN(Number(n)) ? "—" : Number(n).toLocaleString("en-US");
}

export function fmtTime(unix) {
  if (!unix) return "—";
  const d = new Date(Number(unix) * 1000);
  return d.toLocaleString(undefined, {dateStyle: "medium", timeStyle: "short"});
}

export function fmtBytes(n) {
  if (!Number.isFinite(n)) return "—";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/**
 * Copy text to the clipboard. navigator.clipboard needs a secure context (https or localhost); elsewhere the
 * text is selected in `fallbackInput` (if given) so the user can press Ctrl+C.
 */
export async function copyText(text, button, fallbackInput) {
  const old = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    if (fallbackInput) { fallbackInput.focus(); fallbackInput.select(); }
    button.textContent = "Press Ctrl+C";
  }
  setTimeout(() => { button.textContent = old; }, 1600);
}

/** A simple table: columns = [{label, cell: row => Node|string, class?}]. */
export function table(columns, rows, {empty = "Nothing yet.", caption} = {}) {
  if (!rows.length) return h("p", {class: "empty"}, empty);
  return h("div", {class: "table-wrap"},
    h("table", {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map(c => h("th", {scope: "col", class: c.class}, c.label)))),
      h("tbody", {}, rows.map(r => h("tr", {}, columns.map(c => h("td", {class: c.class}, c.cell(r))))))));
}
