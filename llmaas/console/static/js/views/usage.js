// Usage: tokens and requests over time, per model and per key (/v1/usage), with this key's limits and remaining
// monthly budget (/v1/me) and the rate-limit headers of the latest response. Admins may pick another project.

import {get, lastLimits} from "../api.js";
import {barChart} from "../chart.js";
import {field, fill, fmtInt, h, messageBox, table} from "../dom.js";

const DAY = 86400;
const RANGES = [{label: "Last 24 hours", days: 1}, {label: "Last 7 days", days: 7}, {label: "Last 30 days", days: 30}];

const num = v => Number(v) || 0;

/** Fill missing days with zeros so the time axis is even: groups "YYYY-MM-DD" (or unix days) -> rows. */
export function dailyRows(data, start, end) {
  const byDay = new Map();
  for (const r of data) {
    let key = String(r.group);
    if (/^\d+$/.test(key)) key = new Date(Number(key) * 1000).toISOString().slice(0, 10);
    const prev = byDay.get(key.slice(0, 10)) || {};  // sum, should a server split one day into several groups
    byDay.set(key.slice(0, 10), Object.fromEntries(
      ["requests", "prompt_tokens", "completion_tokens", "total_tokens"].map(k => [k, num(prev[k]) + num(r[k])])));
  }
  const rows = [];
  for (let t = Math.floor(start / DAY) * DAY; t < end; t += DAY) {
    const key = new Date(t * 1000).toISOString().slice(0, 10);
    const r = byDay.get(key) || {};
    rows.push({day: key, requests: num(r.requests), prompt: num(r.prompt_tokens), completion: num(r.completion_tokens),
      total: num(r.total_tokens)});
  }
  return rows;
}

function limitsCard(me) {
  const lim = me?.limits || {};
  const used = num(me?.usage_this_month?.total_tokens);
  const budget = lim.monthly_token_budget;
  const rows = [
    ["Requests per minute", lim.rpm ? fmtInt(lim.rpm) : "unlimited"],
    ["Tokens per minute", lim.tpm ? fmtInt(lim.tpm) : "unlimited"],
    ["Monthly token budget", budget ? fmtInt(budget) : "unlimited"],
    ["Used this month", `${fmtInt(used)} tokens`],
  ];
  let bar = null;
  if (budget) {
    const left = Math.max(0, budget - used);
    rows.push(["Remaining this month", `${fmtInt(left)} tokens`]);
    const fillEl = h("div", {class: "meter-fill"});
    fillEl.style.width = `${Math.min(100, used / budget * 100).toFixed(1)}%`; // CSSOM, allowed by the CSP
    if (used >= budget) fillEl.classList.add("over");
    bar = h("div", {class: "meter", role: "meter", "aria-label": "Monthly budget used", "aria-valuemin": 0,
      "aria-valuemax": budget, "aria-valuenow": Math.min(used, budget)}, fillEl);
  }
  const hdr = lastLimits.headers;
  const live = hdr["x-ratelimit-remaining-requests"] !== undefined || hdr["x-ratelimit-remaining-tokens"] !== undefined
    ? h("p", {class: "hint"}, "Right now (from the latest response): ",
      hdr["x-ratelimit-remaining-requests"] !== undefined
        ? `${hdr["x-ratelimit-remaining-requests"]} of ${hdr["x-ratelimit-limit-requests"] ?? "?"} requests left this minute` : "",
      hdr["x-ratelimit-remaining-tokens"] !== undefined
        ? `, ${hdr["x-ratelimit-remaining-tokens"]} of ${hdr["x-ratelimit-limit-tokens"] ?? "?"} tokens.` : ".")
    : null;
  return h("div", {class: "card"}, h("h2", {}, "Limits for this key"),
    me?.partial ? messageBox("note", "This server does not report limits (/v1/me is not available).") : null,
    h("dl", {class: "facts"}, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])), bar, live);
}

function breakdown(title, data, what, names = new Map()) {
  const rows = [...data].sort((a, b) => num(b.total_tokens) - num(a.total_tokens));
  const max = Math.max(1, ...rows.map(r => num(r.total_tokens)));
  const barCell = r => {
    const f = h("div", {class: "hbar-fill"});
    f.style.width = `${(num(r.total_tokens) / max * 100).toFixed(1)}%`;
    return h("div", {class: "hbar", "aria-hidden": "true"}, f);
  };
  return h("div", {class: "card"}, h("h2", {}, title), table([
    {label: what, cell: r => names.has(r.group) ? h("span", {}, names.get(r.group), " ", h("code", {}, r.group))
      : h("code", {}, String(r.group ?? "—"))},
    {label: "Requests", class: "num", cell: r => fmtInt(r.requests)},
    {label: "Prompt", class: "num", cell: r => fmtInt(r.prompt_tokens)},
    {label: "Completion", class: "num", cell: r => fmtInt(r.completion_tokens)},
    {label: "Total tokens", class: "num", cell: r => fmtInt(r.total_tokens)},
    {label: "", class: "barcol", cell: barCell},
  ], rows, {empty: "No usage in this period."}));
}

/**
 * Stacked tokens per day for the top groups (model or key). The API groups by one dimension at a time, so this
 * asks once per day, at most 6 requests at a time.
 */
async function perDayChart(groupBy, q, days, names = new Map(), top = 5) {
  const results = new Array(days.length);
  let next = 0;
  await Promise.all(Array.from({length: Math.min(6, days.length)}, async () => {
    while (next < days.length) {
      const i = next++;
      const t = Date.parse(`${days[i].day}T00:00:00Z`) / 1000;
      const resp = await get("/v1/usage", {query: {...q, group_by: groupBy, start: Math.max(q.start, t), end: Math.min(q.end, t + DAY)}});
      results[i] = Array.isArray(resp?.data) ? resp.data : [];
    }
  }));
  const totals = new Map();
  for (const data of results) for (const r of data) totals.set(r.group, (totals.get(r.group) || 0) + num(r.total_tokens));
  const kept = [...totals].sort((a, b) => b[1] - a[1]).slice(0, top).map(([g]) => g);
  const other = totals.size > kept.length;
  const series = kept.map((g, i) => ({name: names.get(g) || g, class: `s${i + 1}`}));
  if (other) series.push({name: "other", class: "s6"});
  const rows = results.map((data, i) => {
    const values = kept.map(g => data.filter(r => r.group === g).reduce((a, r) => a + num(r.total_tokens), 0));
    if (other) values.push(data.filter(r => !kept.includes(r.group)).reduce((a, r) => a + num(r.total_tokens), 0));
    return {label: days[i].day.slice(5), values};
  });
  return barChart(rows, {series, label: `Tokens per day by ${groupBy}`, integer: true});
}

export async function render(root, ctx) {
  const range = h("select", {name: "range"}, RANGES.map((r, i) => h("option", {value: String(i), selected: i === 1}, r.label)));
  const project = h("select", {name: "project"});
  const refresh = h("button", {type: "button"}, "Refresh");
  const out = h("div", {class: "usage-out"});
  const controls = h("div", {class: "row controls"}, field("Period", range),
    ctx.me?.is_admin ? field("Project", project) : null, refresh);
  fill(root, h("div", {class: "card-head"}, h("h1", {}, "Usage")), controls, out);

  if (ctx.me?.is_admin) {
    fill(project, h("option", {value: ""}, `${ctx.me.project_id || "this project"} (this key)`));
    get("/admin/projects").then(resp => {
      for (const p of resp?.data || []) {
        if (p.id !== ctx.me.project_id) project.append(h("option", {value: p.id}, p.name ? `${p.name} (${p.id})` : p.id));
      }
    }).catch(() => { /* the project list is a convenience; usage of this project still shows */ });
  }

  /** key id -> name: admins can list keys; anyone knows their own key. */
  async function keyNamesFor(projectId) {
    const names = new Map();
    if (ctx.me?.key_id) names.set(ctx.me.key_id, ctx.me.key_name || "this key");
    if (ctx.me?.is_admin && projectId) {
      try {
        const resp = await get("/admin/keys", {query: {project_id: projectId}});
        for (const k of resp?.data || []) names.set(k.id, k.name);
      } catch { /* names are a nicety; ids still show */ }
    }
    return names;
  }

  async function load() {
    refresh.disabled = true;
    const days = RANGES[Number(range.value)].days;
    const end = Math.floor(Date.now() / 1000) + 60;
    const start = days === 1 ? end - DAY : Math.floor(end / DAY) * DAY - (days - 1) * DAY;
    const q = {start, end, project_id: project.value || undefined};
    try {
      const [me, byDay, byModel, byKey] = await Promise.all([
        get("/v1/me").catch(err => (err.status === 404 ? {partial: true} : Promise.reject(err))),
        get("/v1/usage", {query: {...q, group_by: "day"}}),
        get("/v1/usage", {query: {...q, group_by: "model"}}),
        get("/v1/usage", {query: {...q, group_by: "key"}}),
      ]);
      const rows = dailyRows(byDay?.data || [], start, end);
      const modelChart = h("p", {class: "loading"}, "Loading…"), keyChart = h("p", {class: "loading"}, "Loading…");
      const keyNames = await keyNamesFor(project.value || ctx.me?.project_id);
      const sum = k => (byModel?.data || []).reduce((a, r) => a + num(r[k]), 0); // totals: every group counted once
      fill(out,
        h("div", {class: "stats"},
          h("div", {class: "stat"}, h("span", {class: "stat-num", dataset: {testid: "usage-total-tokens"}}, fmtInt(sum("total_tokens"))), "tokens"),
          h("div", {class: "stat"}, h("span", {class: "stat-num", dataset: {testid: "usage-requests"}}, fmtInt(sum("requests"))), "requests")),
        h("div", {class: "grid2"},
          h("div", {class: "card"}, h("h2", {}, "Tokens per day"), barChart(rows.map(r => ({label: r.day.slice(5), values: [r.prompt, r.completion]})),
            {series: [{name: "prompt", class: "s1"}, {name: "completion", class: "s2"}], label: "Tokens per day", integer: true})),
          h("div", {class: "card"}, h("h2", {}, "Requests per day"), barChart(rows.map(r => ({label: r.day.slice(5), values: [r.requests]})),
            {series: [{name: "requests", class: "s3"}], label: "Requests per day", integer: true}))),
        h("div", {class: "grid2"}, breakdown("By model", byModel?.data || [], "Model"), breakdown("By key", byKey?.data || [], "Key", keyNames)),
        h("div", {class: "grid2"},
          h("div", {class: "card"}, h("h2", {}, "Tokens per day by model"), modelChart),
          h("div", {class: "card"}, h("h2", {}, "Tokens per day by key"), keyChart)),
        project.value ? null : limitsCard(me));
      // Drawn after the rest, which does not wait for these per-day queries.
      const later = (slot, groupBy, names) => perDayChart(groupBy, q, rows, names)
        .then(svg => fill(slot, svg)).catch(err => fill(slot, messageBox("error", err.message)));
      later(modelChart, "model");
      later(keyChart, "key", keyNames);
    } catch (err) {
      fill(out, messageBox("error", err.message));
    } finally {
      refresh.disabled = false;
    }
  }
  range.addEventListener("change", load);
  project.addEventListener("change", load);
  refresh.addEventListener("click", load);
  await load();
}
