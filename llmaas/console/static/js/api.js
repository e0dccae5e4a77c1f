// The console's only way to the server: the same public HTTP API the SDK uses, with the user's own key.
//
// The key lives in sessionStorage (gone when the tab closes, cleared on sign-out) and travels in the
// Authorization bearer header. The console never uses cookies (fetch runs with credentials: "omit"), so a
// cross-site page cannot make the browser act with the user's rights: CSRF does not apply.

const STORAGE_KEY = "llmaas.apiKey";

export const auth = {
  key: () => sessionStorage.getItem(STORAGE_KEY),
  signIn: key => sessionStorage.setItem(STORAGE_KEY, key),
  signOut: () => sessionStorage.removeItem(STORAGE_KEY),
};

/** The x-ratelimit-* headers of the latest response, for the usage page. */
export const lastLimits = {headers: {}, at: null};

export class ApiError extends Error {
  constructor(message, {status = 0, code = null, type = null, param = null, retryAfter = null} = {}) {
    super(message);
    this.name = "ApiError";
    Object.assign(this, {status, code, type, param, retryAfter});
  }
}

/** Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or null. */
export function parseRetryAfter(value) {
  if (!value) return null;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, secs);
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, (when - Date.now()) / 1000);
}

/** An API error in words a person can act on. */
export function describe(status, message, retryAfter) {
  const said = message ? ` The server said: “${message}”` : "";
  if (status === 401) return `Your API key was not accepted. Sign out and sign in with a valid key.${said}`;
  if (status === 403) return `This API key is not allowed to do that.${said}`;
  if (status === 404) return `Not found.${said}`;
  if (status === 413) return `That is too large for the server.${said}`;
  if (status === 429) {
    let when = "Try again in a moment.";
    if (retryAfter !== null) {
      const secs = Math.ceil(retryAfter);
      const at = new Date(Date.now() + secs * 1000).toLocaleTimeString();
      when = `Try again in ${secs} second${secs === 1 ? "" : "s"} (at ${at}).`;
    }
    return `Rate limited or over budget. ${when}${said}`;
  }
  if (status === 400 || status === 409 || status === 422) return message || "The server refused the request.";
  if (status >= 500) return `The server had a problem (HTTP ${status}). Try again later.${said}`;
  return message || `Request failed (HTTP ${status}).`;
}

async function errorFrom(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON: describe by status */ }
  const e = body && typeof body.error === "object" && body.error ? body.error : {};
  const message = typeof e.message === "string" ? e.message : typeof body?.detail === "string" ? body.detail : "";
  const retryAfter = parseRetryAfter(resp.headers.get("retry-after"));
  return new ApiError(describe(resp.status, message, retryAfter),
    {status: resp.status, code: e.code ?? null, type: e.type ?? null, param: e.param ?? null, retryAfter});
}

function recordLimits(headers) {
  const found = {};
  for (const [k, v] of headers) if (k.startsWith("x-ratelimit-")) found[k] = v;
  if (Object.keys(found).length) { lastLimits.headers = found; lastLimits.at = Date.now(); }
}

function authHeaders(extra = {}) {
  const key = auth.key();
  return key ? {...extra, Authorization: `Bearer ${key}`} : extra;
}

async function send(url, init) {
  try {
    return await fetch(url, {...init, credentials: "omit", cache: "no-store"});
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError("Could not reach the llmaas server. Check that it is running and that you are online, then try again.");
  }
}

/** request("GET", "/v1/models", {query, json, form, signal}) -> parsed JSON (or text). Throws ApiError. */
export async function request(method, path, {query, json, form, signal} = {}) {
  let url = path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
    if (q.toString()) url += `?${q}`;
  }
  const init = {method, headers: authHeaders(), signal};
  if (json !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(json); }
  if (form) init.body = form;
  const resp = await send(url, init);
  recordLimits(resp.headers);
  if (!resp.ok) throw await errorFrom(resp);
  if (resp.status === 204) return null;
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : resp.text();
}

export const get = (path, opts) => request("GET", path, opts);
export const post = (path, json, opts = {}) => request("POST", path, {...opts, json});
export const patch = (path, json, opts = {}) => request("PATCH", path, {...opts, json});

/** Every page of an OpenAI-style list (`has_more` + `after`), up to maxPages. */
export async function listAll(path, query = {}, maxPages = 20) {
  const out = [];
  let after = null;
  for (let i = 0; i < maxPages; i++) {
    const page = await get(path, {query: {...query, after}});
    const data = Array.isArray(page?.data) ? page.data : [];
    out.push(...data);
    if (!page?.has_more || !data.length) break;
    after = data[data.length - 1].id;
  }
  return out;
}

/** The `data:` payloads of a server-sent event stream, parsed, until `[DONE]` or the end of the body. */
async function* sseEvents(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf = (buf + value).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = event.split("\n").filter(l => l.startsWith("data:")).map(l => l.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        try { yield JSON.parse(data); } catch { throw new ApiError("The server sent a stream event that is not JSON."); }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function openStream(path, payload, signal) {
  const resp = await send(path, {
    method: "POST",
    headers: authHeaders({"Content-Type": "application/json", Accept: "text/event-stream"}),
    body: JSON.stringify(payload),
    signal,
  });
  recordLimits(resp.headers);
  if (!resp.ok) throw await errorFrom(resp);
  return resp;
}

const failedPartWay = error => {
  const msg = typeof error?.message === "string" ? error.message : "";
  return new ApiError(`The generation failed part-way. ${msg}`.trim(), {code: error?.code ?? null});
};

/**
 * Stream a chat completion: yields each parsed SSE chunk of /v1/chat/completions (stream + include_usage).
 * Abort with `signal` to stop the generation; the server then stops generating too.
 */
export async function* streamChat(body, signal) {
  const resp = await openStream("/v1/chat/completions", {...body, stream: true, stream_options: {include_usage: true}}, signal);
  for await (const chunk of sseEvents(resp)) {
    if (chunk && chunk.error) throw failedPartWay(chunk.error);
    yield chunk;
  }
}

/**
 * Stream a Responses API turn: yields each event of /v1/responses (response.created … response.completed);
 * `response.failed` (and a bare `error` event) throw. Abort with `signal` as for chat.
 */
export async function* streamResponse(body, signal) {
  const resp = await openStream("/v1/responses", {...body, stream: true}, signal);
  for await (const event of sseEvents(resp)) {
    if (event?.type === "response.failed") throw failedPartWay(event.response?.error);
    if (event?.type === "error" || (event && event.error && !event.type)) throw failedPartWay(event.error || event);
    yield event;
  }
}
