// Admin (keys whose /v1/me says is_admin): projects and their limits, API keys (create: the secret is shown
// once with a copy button; revoke), and every project's usage. Only the /admin/... and /v1/usage public API.

import {get, patch, post} from "../api.js";
import {copyText, field, fill, fmtInt, fmtTime, h, messageBox, showError, table} from "../dom.js";

const DAY = 86400;

/** "" -> undefined (not sent), otherwise a whole number >= 0. */
function optInt(input) {
  const v = input.value.trim();
  if (!v) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${input.name}: enter a whole number, or leave it empty for no limit.`);
  return n;
}

const limitInputs = (values = {}) => ({
  rpm: h("input", {type: "number", name: "rpm", min: 1, step: 1, placeholder: "no limit", value: values.rpm ?? ""}),
  tpm: h("input", {type: "number", name: "tpm", min: 1, step: 1, placeholder: "no limit", value: values.tpm ?? ""}),
  monthly_token_budget: h("input", {type: "number", name: "monthly_token_budget", min: 0, step: 1, placeholder: "no limit",
    value: values.monthly_token_budget ?? ""}),
});
const limitFields = li => [field("Requests / minute", li.rpm), field("Tokens / minute", li.tpm),
  field("Monthly token budget", li.monthly_token_budget)];
const readLimits = li => Object.fromEntries(Object.entries(li).map(([k, el]) => [k, optInt(el)]).filter(([, v]) => v !== undefined));
const limitText = o => ["rpm", "tpm", "monthly_token_budget"].map(k => `${k.replace("monthly_token_budget", "budget")} ${o?.[k] ? fmtInt(o[k]) : "∞"}`).join(" · ");

const keyRevoked = k => Boolean(k.revoked || k.revoked_at || k.status === "revoked");

export async function render(root, ctx) {
  const projectsBody = h("div");
  const keysBody = h("div");
  const usageBody = h("div");
  const projectSelect = h("select", {name: "project_id"});
  const secretSlot = h("div", {class: "slot", "aria-live": "polite"});
  const keySlot = h("div", {class: "slot"});
  const projSlot = h("div", {class: "slot"});

  // --- create project -------------------------------------------------------------------------------------
  const pName = h("input", {type: "text", name: "name", required: true, maxlength: 128});
  const pId = h("input", {type: "text", name: "id", maxlength: 64, pattern: "[a-z0-9][a-z0-9_\\-]*", placeholder: "from the name"});
  const pLimits = limitInputs();
  const projForm = h("form", {class: "subform"}, h("h3", {}, "New project"),
    h("div", {class: "grid3"}, field("Name", pName), field("Id (optional)", pId), limitFields(pLimits)),
    projSlot, h("div", {class: "row"}, h("button", {type: "submit"}, "Create project")));

  // --- create key -----------------------------------------------------------------------------------------
  const kName = h("input", {type: "text", name: "name", required: true, maxlength: 128, placeholder: "e.g. alice-laptop"});
  const kAdmin = h("input", {type: "checkbox", name: "is_admin"});
  const kModels = h("input", {type: "text", name: "models", placeholder: "all models"});
  const kExpires = h("input", {type: "date", name: "expires_at"});
  const kLimits = limitInputs();
  const keyForm = h("form", {class: "subform"}, h("h3", {}, "New key"),
    h("div", {class: "grid3"}, field("Name", kName), field("Only these models (comma-separated)", kModels),
      field("Expires (optional)", kExpires), limitFields(kLimits),
      h("label", {class: "check"}, kAdmin, " Admin key (can manage keys and projects)")),
    keySlot, h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, "Create key")));

  fill(root, h("h1", {}, "Admin"),
    h("div", {class: "card"}, h("h2", {}, "API keys"), field("Project", projectSelect), secretSlot, keysBody, keyForm),
    h("div", {class: "card"}, h("h2", {}, "Projects and limits"), projectsBody, projForm),
    h("div", {class: "card"}, h("h2", {}, "Usage of every project, last 30 days"), usageBody));

  let projects = [];

  async function loadProjects() {
    try {
      const resp = await get("/admin/projects");
      projects = Array.isArray(resp?.data) ? resp.data : [];
    } catch (err) {
      fill(projectsBody, messageBox("error", err.message));
      return;
    }
    const keep = projectSelect.value || ctx.me?.project_id;
    fill(projectSelect, projects.map(p => h("option", {value: p.id}, p.name && p.name !== p.id ? `${p.name} (${p.id})` : p.id)));
    if (projects.some(p => p.id === keep)) projectSelect.value = keep;
    fill(projectsBody, table([
      {label: "Project", cell: p => h("code", {}, p.id)},
      {label: "Name", cell: p => p.name || ""},
      {label: "Limits", cell: p => limitText(p)},
      {label: "", cell: p => h("button", {type: "button", class: "small",
        onclick: ev => editLimits(p.id, p, `/admin/projects/${encodeURIComponent(p.id)}`, loadProjects, ev.target)}, "Set limits")},
    ], projects, {empty: "No projects."}));
  }

  // One form for a project's limits and a key's own (PATCH; an empty field removes the limit).
  function editLimits(label, current, path, reload, button) {
    const li = limitInputs(current);
    const slot = h("div", {class: "slot"});
    const form = h("form", {class: "subform inline"}, h("h3", {}, `Limits of ${label}`), h("div", {class: "grid3"}, limitFields(li)),
      slot, h("div", {class: "row"}, h("button", {type: "submit", class: "primary"}, "Save limits"),
        h("button", {type: "button", onclick: () => form.remove()}, "Close")));
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      try {
        const body = {rpm: null, tpm: null, monthly_token_budget: null, ...readLimits(li)}; // empty = no limit
        await patch(path, body);
        form.remove();
        await reload();
      } catch (err) { showError(slot, err); }
    });
    button.closest(".table-wrap").after(form);
    li.rpm.focus();
  }

  async function loadKeys() {
    if (!projectSelect.value) { fill(keysBody); return; }
    let keys;
    try {
      const resp = await get("/admin/keys", {query: {project_id: projectSelect.value}});
      keys = Array.isArray(resp?.data) ? resp.data : [];
    } catch (err) {
      fill(keysBody, messageBox("error", err.message));
      return;
    }
    fill(keysBody, table([
      {label: "Name", cell: k => k.name || ""},
      {label: "Key", cell: k => h("code", {}, `${k.key_prefix || k.prefix || k.id}…`)},
      {label: "Role", cell: k => k.is_admin ? "admin" : "user"},
      {label: "Models", cell: k => Array.isArray(k.models) && k.models.length ? k.models.join(", ") : "all"},
      {label: "Limits", cell: k => limitText(k)},
      {label: "Created", cell: k => fmtTime(k.created_at)},
      {label: "Status", cell: k => keyRevoked(k) ? h("span", {class: "badge status-cancelled"}, "revoked")
        : h("span", {class: "badge status-succeeded"}, "active")},
      {label: "", cell: k => keyRevoked(k) ? "" : h("div", {class: "row"},
        h("button", {type: "button", class: "small", "aria-label": `Set limits of key ${k.name || k.id}`,
          onclick: ev => editLimits(`key ${k.name || k.id}`, k, `/admin/keys/${encodeURIComponent(k.id)}`, loadKeys, ev.target)},
          "Set limits"),
        h("button", {type: "button", class: "small danger",
          "aria-label": `Revoke key ${k.name || k.id}`, onclick: ev => revoke(k, ev.target)}, "Revoke"))},
    ], keys, {empty: "This project has no keys yet."}));
  }

  async function revoke(k, button) {
    const self = k.id === ctx.me?.key_id ? " This is the key you are signed in with." : "";
    if (!window.confirm(`Revoke key “${k.name || k.id}”? Programs using it stop working at once.${self}`)) return;
    button.disabled = true;
    try {
      await post(`/admin/keys/${encodeURIComponent(k.id)}/revoke`, {});
      await loadKeys();
    } catch (err) {
      showError(keySlot, err);
      button.disabled = false;
    }
  }

  function showSecret(created) {
    const secret = h("input", {type: "text", readOnly: true, value: created.key, class: "secret", "aria-label": "New API key"});
    const copy = h("button", {type: "button", class: "primary", onclick: () => copyText(created.key, copy, secret)}, "Copy");
    fill(secretSlot, h("div", {class: "msgbox ok secret-box", role: "status"},
      h("p", {}, h("strong", {}, `Key “${created.name || created.id}” created. `),
        "Copy it now: it is shown only this once and cannot be recovered."),
      h("div", {class: "row"}, secret, copy,
        h("button", {type: "button", onclick: () => fill(secretSlot)}, "I have saved it"))));
    secret.select();
  }

  keyForm.addEventListener("submit", async ev => {
    ev.preventDefault();
    showError(keySlot, null);
    try {
      const body = {project_id: projectSelect.value, name: kName.value.trim(), is_admin: kAdmin.checked, ...readLimits(kLimits)};
      const models = kModels.value.split(",").map(s => s.trim()).filter(Boolean);
      if (models.length) body.models = models;
      if (kExpires.value) body.expires_at = Math.floor(Date.parse(`${kExpires.value}T23:59:59Z`) / 1000);
      const created = await post("/admin/keys", body);
      keyForm.reset();
      showSecret(created);
      await loadKeys();
    } catch (err) { showError(keySlot, err); }
  });

  projForm.addEventListener("submit", async ev => {
    ev.preventDefault();
    showError(projSlot, null);
    try {
      const body = {name: pName.value.trim(), ...readLimits(pLimits)};
      if (pId.value.trim()) body.id = pId.value.trim();
      const created = await post("/admin/projects", body);
      projForm.reset();
      await loadProjects();
      if (created?.id) { projectSelect.value = created.id; await loadKeys(); }
      await loadUsage();
    } catch (err) { showError(projSlot, err); }
  });

  async function loadUsage() {
    const end = Math.floor(Date.now() / 1000) + 60, start = end - 30 * DAY;
    const rows = await Promise.all(projects.slice(0, 50).map(async p => {
      try {
        const resp = await get("/v1/usage", {query: {start, end, group_by: "model", project_id: p.id}});
        const data = Array.isArray(resp?.data) ? resp.data : [];
        const sum = k => data.reduce((a, r) => a + (Number(r[k]) || 0), 0);
        return {id: p.id, requests: sum("requests"), tokens: sum("total_tokens"), models: data.length};
      } catch (err) {
        return {id: p.id, error: err.message};
      }
    }));
    fill(usageBody, table([
      {label: "Project", cell: r => h("code", {}, r.id)},
      {label: "Requests", class: "num", cell: r => r.error ? "—" : fmtInt(r.requests)},
      {label: "Total tokens", class: "num", cell: r => r.error ? r.error : fmtInt(r.tokens)},
      {label: "Models used", class: "num", cell: r => r.error ? "—" : fmtInt(r.models)},
    ], rows, {empty: "No projects."}));
  }

  projectSelect.addEventListener("change", () => { fill(secretSlot); loadKeys(); });
  await loadProjects();
  await Promise.all([loadKeys(), loadUsage()]);
}
