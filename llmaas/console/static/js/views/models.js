// Models: what this server serves, context lengths, and which models are fine-tuned (from which base and job).

import {fill, fmtInt, fmtTime, h, messageBox, table} from "../dom.js";
import {listModels} from "../models.js";

export async function render(root, ctx) {
  const refresh = h("button", {type: "button"}, "Refresh");
  const body = h("div", {}, h("p", {class: "loading"}, "Loading models…"));
  fill(root, h("div", {class: "card"},
    h("div", {class: "card-head"}, h("h1", {}, "Models"), refresh),
    h("p", {class: "hint"}, "Every model this key may use. Fine-tuned models are visible to their own project only."),
    body));

  async function load() {
    let models;
    try {
      models = await listModels();
    } catch (err) {
      fill(body, messageBox("error", err.message));
      return;
    }
    const open = m => h("button", {type: "button", class: "small",
      onclick: () => { ctx.prefs.model = m.id; ctx.navigate("playground"); }}, "Open in playground");
    fill(body, table([
      {label: "Model", cell: m => h("code", {class: "id"}, m.id)},
      {label: "Kind", cell: m => m.kind},
      {label: "Context length", class: "num", cell: m => m.contextLength ? `${fmtInt(m.contextLength)} tokens` : "—"},
      {label: "Fine-tuned", cell: m => m.fineTuned
        ? h("span", {}, "from ", h("code", {}, m.base || "?"), m.job ? h("span", {}, " by job ",
          h("a", {href: `#/fine-tuning/${encodeURIComponent(m.job)}`}, m.job)) : null)
        : "base model"},
      {label: "Created", cell: m => fmtTime(m.created)},
      {label: "", cell: m => m.kind === "chat" ? open(m) : ""},
    ], models, {empty: "No models are served.", caption: `${models.length} model${models.length === 1 ? "" : "s"}`}));
  }
  refresh.addEventListener("click", load);
  await load();
}
