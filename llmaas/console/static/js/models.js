// Shared reading of /v1/models: which models are chat vs embedding, base vs fine-tuned, and their context length.

import {get} from "./api.js";

/** ft:<base>:<project>:<suffix>:<job id> -> {base, project, suffix, job}; null for base models. */
export function parseFineTuned(id) {
  if (typeof id !== "string" || !id.startsWith("ft:")) return null;
  const parts = id.split(":");
  if (parts.length < 5) return {base: parts[1] || "", project: "", suffix: "", job: ""};
  return {base: parts.slice(1, parts.length - 3).join(":"), project: parts[parts.length - 3],
    suffix: parts[parts.length - 2], job: parts[parts.length - 1]};
}

export function describeModel(m) {
  const ft = parseFineTuned(m.id);
  const kind = m.kind || m.type || (ft ? "chat" : null);
  return {
    id: m.id,
    kind: kind || "chat",
    kindKnown: Boolean(kind),
    contextLength: m.max_model_len ?? m.context_length ?? m.context_window ?? null,
    created: m.created ?? null,
    ownedBy: m.owned_by ?? "",
    fineTuned: ft !== null,
    base: ft ? (m.root || m.parent || ft.base) : null,
    job: ft ? (m.fine_tuning_job || ft.job) : null,
  };
}

export async function listModels() {
  const resp = await get("/v1/models");
  const data = Array.isArray(resp?.data) ? resp.data : [];
  return data.map(describeModel).sort((a, b) => Number(a.fineTuned) - Number(b.fineTuned) || a.id.localeCompare(b.id));
}
