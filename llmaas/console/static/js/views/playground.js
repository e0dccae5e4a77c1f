// Playground: chat with any served model (base or fine-tuned) through streaming /v1/chat/completions, or through
// the Responses API (/v1/responses), where the server keeps the conversation: each turn sends only the new message
// and the previous response's id, and a stored conversation can be continued by pasting its id.
// With a system prompt, temperature, max tokens, an optional JSON schema (structured output on chat completions: the
// server guarantees a reply that matches it, shown parsed), per-reply token usage, Stop, and copyable curl / Python.

import {ApiError, get, listAll, streamChat, streamResponse} from "../api.js";
import {copyText, field, fill, h, messageBox, showError} from "../dom.js";
import {listModels} from "../models.js";
import {curlSnippet, pythonSnippet, responsesCurlSnippet, responsesPythonSnippet} from "../snippets.js";

export {curlSnippet, pythonSnippet, responsesCurlSnippet, responsesPythonSnippet};

// The conversation survives switching views (not page reloads): it lives in this module.
const FRESH = () => ({model: "", system: "", temperature: 0.7, maxTokens: 256, schema: "", messages: [], api: "chat", responseId: ""});
const state = FRESH();
let controller = null;

export function reset() {
  controller?.abort();
  Object.assign(state, FRESH());
}

/** A Responses `usage` in the chat shape the usage line reads. */
export function chatUsage(u) {
  return u ? {prompt_tokens: u.input_tokens, completion_tokens: u.output_tokens, total_tokens: u.total_tokens} : null;
}

const itemText = item => (item.content || []).map(p => p.text ?? p.refusal ?? "").join("");

/**
 * The conversation that ends with stored response `id`, oldest turn first, as playground messages: walks
 * previous_response_id (at most `maxTurns` turns) reading each turn's input items and output.
 */
export async function loadConversation(id, maxTurns = 50) {
  const turns = [];
  for (let cur = id; cur && turns.length < maxTurns;) {
    const path = `/v1/responses/${encodeURIComponent(cur)}`;
    let resp;
    try { resp = await get(path); } catch (err) { if (!turns.length) throw err; break; } // an earlier turn was deleted
    const items = await listAll(`${path}/input_items`, {order: "asc", limit: 100});
    turns.unshift({resp, items});
    cur = resp.previous_response_id;
  }
  const messages = [];
  for (const {resp, items} of turns) {
    for (const it of items) {
      if (it.type === "message" && (it.role === "user" || it.role === "assistant")) messages.push({role: it.role, content: itemText(it)});
    }
    messages.push({role: "assistant", content: resp.output.filter(o => o.type === "message").map(itemText).join(""),
      usage: chatUsage(resp.usage), finish: resp.status === "incomplete" ? "length" : "stop", seconds: 0});
  }
  return {messages, model: turns.length ? turns[turns.length - 1].resp.model : ""};
}

function usageText(m) {
  const parts = [];
  if (m.usage) {
    parts.push(`${m.usage.prompt_tokens} prompt + ${m.usage.completion_tokens} completion = ${m.usage.total_tokens} tokens`);
  } else if (m.finish === "stopped") {
    parts.push("usage not reported for a stopped reply");
  }
  if (m.finish === "stopped") parts.push("stopped by you");
  else if (m.finish === "length") parts.push("cut off at max tokens");
  else if (m.finish === "failed part-way") parts.push("the reply failed part-way");
  else if (m.finish && m.finish !== "stop") parts.push(`finished: ${m.finish}`);
  if (m.seconds && m.usage?.completion_tokens) {
    parts.push(`${m.seconds.toFixed(1)} s, ${(m.usage.completion_tokens / m.seconds).toFixed(1)} tokens/s`);
  }
  return parts.join(" · ");
}

function messageView(m) {
  const content = h("div", {class: "content"}, m.content);
  const usage = h("div", {class: "usage"}, m.role === "assistant" ? usageText(m) : "");
  const parsed = h("pre", {class: "parsed", hidden: !m.parsed}, m.parsed || "");
  const el = h("article", {class: `msg msg-${m.role}`, "aria-label": m.role === "user" ? "You" : "Assistant"},
    h("div", {class: "who"}, m.role === "user" ? "You" : "Assistant"), content, parsed, usage);
  return {el, content, usage, parsed};
}

/** The JSON schema box as a response_format (null when empty); throws a readable error when it is not JSON. */
export function responseFormat(schemaText) {
  if (!schemaText.trim()) return null;
  let schema;
  try {
    schema = JSON.parse(schemaText);
  } catch (err) {
    throw new Error(`The JSON schema is not valid JSON: ${err.message}`);
  }
  if (!schema || typeof schema !== "object" || Array.isArray(schema)) throw new Error("The JSON schema must be a JSON object.");
  return {type: "json_schema", json_schema: {name: "playground", schema, strict: true}};
}

/** The reply pretty-printed as the parsed object (structured output), or null when it is not JSON. */
export function parsedText(content) {
  try {
    return `parsed: ${JSON.stringify(JSON.parse(content), null, 2)}`;
  } catch {
    return null;
  }
}

/** The request body the playground sends (also the basis of the code snippets). */
function requestBody(history) {
  const messages = [];
  if (state.system.trim()) messages.push({role: "system", content: state.system});
  for (const m of history) messages.push({role: m.role, content: m.content});
  const body = {model: state.model, messages, temperature: state.temperature, max_tokens: state.maxTokens};
  let rf = null;
  try { rf = responseFormat(state.schema); } catch { rf = null; } // the box shows its own error
  if (rf) body.response_format = rf;
  return body;
}

/** The /v1/responses body of one turn: only the new message; the server holds the rest under responseId. */
function responsesBody(text) {
  const body = {model: state.model, input: text, temperature: state.temperature, max_output_tokens: state.maxTokens};
  if (state.system.trim()) body.instructions = state.system;
  if (state.responseId) body.previous_response_id = state.responseId;
  return body;
}

export async function render(root, ctx) {
  const errorSlot = h("div", {class: "slot"});
  const modelSelect = h("select", {name: "model"}, h("option", {value: ""}, "Loading models…"));
  const system = h("textarea", {name: "system", rows: 4, placeholder: "You are a helpful assistant.", value: state.system});
  const temp = h("input", {type: "range", name: "temperature", min: 0, max: 2, step: 0.05, value: String(state.temperature)});
  const tempOut = h("output", {class: "num"}, state.temperature.toFixed(2));
  const maxTokens = h("input", {type: "number", name: "max_tokens", min: 1, max: 4096, step: 1, value: String(state.maxTokens)});
  const schemaBox = h("textarea", {name: "json_schema", rows: 4, spellcheck: "false", value: state.schema,
    placeholder: '{"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}'});
  const schemaNote = h("small", {class: "hint", role: "status"}, "Optional: the reply will match this JSON schema.");
  const ctxNote = h("small", {class: "hint"});
  const apiSelect = h("select", {name: "api"},
    h("option", {value: "chat"}, "Chat completions"),
    h("option", {value: "responses"}, "Responses (stored by the server)"));
  apiSelect.value = state.api;
  const responseIdBox = h("input", {type: "text", name: "response_id", placeholder: "resp_…", value: state.responseId,
    autocomplete: "off", spellcheck: "false"});
  const continueBtn = h("button", {type: "button"}, "Continue");
  const conversationField = h("div", {},
    field("Response id", responseIdBox, "The latest turn's id; paste one to continue a stored conversation."),
    h("div", {class: "row"}, continueBtn));
  conversationField.hidden = state.api !== "responses";
  const log = h("div", {class: "messages", role: "log", "aria-live": "polite", "aria-label": "Conversation", tabindex: "0"});
  const input = h("textarea", {name: "prompt", rows: 3, "aria-label": "Message",
    placeholder: "Type a message. Enter sends, Shift+Enter starts a new line."});
  const sendBtn = h("button", {type: "submit", class: "primary send"}, "Send");
  const snippetCode = h("code");
  const snippetPre = h("pre", {class: "snippet", tabindex: "0"}, snippetCode);
  let snippetKind = "curl";
  const curlBtn = h("button", {type: "button"}, "Copy curl");
  const pyBtn = h("button", {type: "button"}, "Copy Python");

  const showSnippet = () => {
    if (state.api === "responses") {
      const body = responsesBody([...state.messages].reverse().find(m => m.role === "user")?.content || "Hello");
      snippetCode.textContent = snippetKind === "curl" ? responsesCurlSnippet(body) : responsesPythonSnippet(body);
      return;
    }
    const body = requestBody(state.messages.filter(m => m.content));
    snippetCode.textContent = snippetKind === "curl" ? curlSnippet(body) : pythonSnippet(body);
  };
  curlBtn.addEventListener("click", () => { snippetKind = "curl"; showSnippet(); copyText(snippetCode.textContent, curlBtn); });
  pyBtn.addEventListener("click", () => { snippetKind = "python"; showSnippet(); copyText(snippetCode.textContent, pyBtn); });

  const setResponseId = id => { state.responseId = id; responseIdBox.value = id; };
  const startOver = () => {
    controller?.abort();
    state.messages = [];
    setResponseId("");
    fill(log, h("p", {class: "empty hint-empty"}, "Say hello to start a conversation."));
    showError(errorSlot, null);
    showSnippet();
    input.focus();
  };
  const newChat = h("button", {type: "button", onclick: startOver}, "New chat");
  apiSelect.addEventListener("change", () => {
    state.api = apiSelect.value;
    conversationField.hidden = state.api !== "responses";
    startOver(); // the two APIs keep the conversation in different places: start afresh
  });
  continueBtn.addEventListener("click", async () => {
    const id = responseIdBox.value.trim();
    if (!id || controller) return;
    showError(errorSlot, null);
    try {
      const loaded = await loadConversation(id);
      state.messages = loaded.messages;
      setResponseId(id);
      if (loaded.model && models.some(m => m.id === loaded.model)) { state.model = loaded.model; modelSelect.value = loaded.model; limitTokens(); }
      fill(log, ...state.messages.map(m => messageView(m).el));
      log.scrollTop = log.scrollHeight;
      showSnippet();
      input.focus();
    } catch (err) {
      showError(errorSlot, err);
    }
  });

  const form = h("form", {class: "composer"}, input, sendBtn);
  const settings = h("aside", {class: "card pg-settings", "aria-label": "Settings"},
    field("Model", modelSelect, ctxNote),
    field("API", apiSelect),
    conversationField,
    field("System prompt", system),
    h("label", {class: "field"}, h("span", {class: "caption"}, "Temperature ", tempOut), temp),
    field("Max tokens", maxTokens),
    field("JSON schema (structured output)", schemaBox, schemaNote),
    h("div", {class: "row"}, newChat),
    h("details", {class: "code"}, h("summary", {}, "Use this from code"),
      h("p", {class: "hint"}, "Set LLMAAS_API_KEY to your key first; the snippet never contains it."),
      h("div", {class: "row"}, curlBtn, pyBtn), snippetPre));
  fill(root, h("div", {class: "playground"}, settings,
    h("div", {class: "card pg-chat"}, log, errorSlot, form)));

  let models = [];
  function limitTokens() {
    const m = models.find(x => x.id === state.model);
    ctxNote.textContent = m?.contextLength ? `Context length: ${m.contextLength.toLocaleString("en-US")} tokens` : "";
    maxTokens.max = String(m?.contextLength || 4096);
  }

  // --- settings ----------------------------------------------------------------------------------------
  modelSelect.addEventListener("change", () => { state.model = modelSelect.value; limitTokens(); showSnippet(); });
  system.addEventListener("input", () => { state.system = system.value; showSnippet(); });
  temp.addEventListener("input", () => {
    state.temperature = Number(temp.value);
    tempOut.textContent = state.temperature.toFixed(2);
    showSnippet();
  });
  schemaBox.addEventListener("input", () => {
    state.schema = schemaBox.value;
    try {
      responseFormat(state.schema);
      schemaNote.textContent = "Optional: the reply will match this JSON schema.";
    } catch (err) {
      schemaNote.textContent = err.message;
    }
    showSnippet();
  });
  maxTokens.addEventListener("change", () => {
    const v = Math.round(Number(maxTokens.value));
    state.maxTokens = Number.isFinite(v) ? Math.min(Math.max(1, v), Number(maxTokens.max)) : 256;
    maxTokens.value = String(state.maxTokens);
    showSnippet();
  });

  for (const m of state.messages) log.append(messageView(m).el);
  showSnippet();

  // --- sending -----------------------------------------------------------------------------------------
  const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const setBusy = busy => {
    sendBtn.textContent = busy ? "Stop" : "Send";
    sendBtn.classList.toggle("danger", busy);
    sendBtn.setAttribute("aria-label", busy ? "Stop generating" : "Send message");
    modelSelect.disabled = busy;
    apiSelect.disabled = busy;
    continueBtn.disabled = busy;
  };

  async function sendMessage() {
    const text = input.value;
    if (!text.trim() || controller) return;
    if (!state.model) { showError(errorSlot, new Error("Pick a model first.")); return; }
    try { responseFormat(state.schema); } catch (err) { showError(errorSlot, err); return; }
    showError(errorSlot, null);
    const user = {role: "user", content: text};
    const reply = {role: "assistant", content: "", usage: null, finish: null, seconds: 0};
    const body = requestBody([...state.messages, user]);
    state.messages.push(user, reply);
    log.append(messageView(user).el);
    const view = messageView(reply);
    view.el.classList.add("streaming");
    log.setAttribute("aria-busy", "true"); // screen readers read the reply once it is complete, not per token
    view.usage.textContent = "generating…";
    log.append(view.el);
    log.scrollTop = log.scrollHeight;
    input.value = "";
    const text0 = document.createTextNode("");
    view.content.append(text0);
    controller = new AbortController();
    setBusy(true);
    const t0 = performance.now();
    try {
      const append = delta => {
        const stick = nearBottom();
        text0.appendData(delta);
        reply.content += delta;
        if (stick) log.scrollTop = log.scrollHeight;
      };
      if (state.api === "responses") {
        for await (const event of streamResponse(responsesBody(text), controller.signal)) {
          if (event.type === "response.output_text.delta" && event.delta) append(event.delta);
          if (event.type === "response.completed" || event.type === "response.incomplete") {
            reply.usage = chatUsage(event.response.usage);
            reply.finish = event.type === "response.incomplete" ? "length" : "stop";
            if (event.response.store) setResponseId(event.response.id); // the next turn continues this one
          }
        }
      } else {
        for await (const chunk of streamChat(body, controller.signal)) {
          const choice = chunk.choices?.[0];
          if (choice?.delta?.content) append(choice.delta.content);
          if (choice?.finish_reason) reply.finish = choice.finish_reason;
          if (chunk.usage) reply.usage = chunk.usage;
        }
      }
    } catch (err) {
      if (err.name === "AbortError") {
        reply.finish = "stopped";
      } else if (reply.content) {
        reply.finish = "failed part-way"; // keep what arrived; the error says why it ended
        showError(errorSlot, err);
      } else {
        // Nothing useful came back: take the turn out of the history and give the text back to retry.
        state.messages.splice(state.messages.indexOf(user), 2);
        view.el.previousElementSibling?.remove();
        view.el.remove();
        if (!input.value) input.value = text;
        if (err.code === "context_length_exceeded") {
          err.message += " Start a new chat, shorten the system prompt, or lower Max tokens.";
        }
        showError(errorSlot, err instanceof ApiError ? err : new Error(`The reply failed: ${err.message}`));
      }
    } finally {
      reply.seconds = (performance.now() - t0) / 1000;
      if (body.response_format && reply.content) {
        reply.parsed = parsedText(reply.content);
        view.parsed.textContent = reply.parsed || "";
        view.parsed.hidden = !reply.parsed;
      }
      view.el.classList.remove("streaming");
      log.removeAttribute("aria-busy");
      view.usage.textContent = usageText(reply);
      controller = null;
      setBusy(false);
      showSnippet();
    }
  }

  form.addEventListener("submit", ev => {
    ev.preventDefault();
    if (controller) controller.abort(); else sendMessage();
  });
  input.addEventListener("keydown", ev => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      if (!controller) sendMessage();
    }
  });
  input.focus();
  if (!state.messages.length) log.append(h("p", {class: "empty hint-empty"}, "Say hello to start a conversation."));
  const observer = new MutationObserver(() => {
    const hint = log.querySelector(".hint-empty");
    if (hint && log.childElementCount > 1) hint.remove();
  });
  observer.observe(log, {childList: true});

  // --- models (last: everything above already works while they load) --------------------------------------
  try {
    models = (await listModels()).filter(m => m.kind === "chat");
  } catch (err) {
    showError(errorSlot, err);
  }
  const base = models.filter(m => !m.fineTuned), tuned = models.filter(m => m.fineTuned);
  const opt = m => h("option", {value: m.id}, m.id);
  fill(modelSelect,
    base.length ? h("optgroup", {label: "Base models"}, base.map(opt)) : null,
    tuned.length ? h("optgroup", {label: "Fine-tuned"}, tuned.map(opt)) : null);
  if (!models.length && !errorSlot.childElementCount) {
    showError(errorSlot, new Error("No chat models are served. Start llmaas with at least one chat model."));
  }
  const wanted = ctx.prefs.model || state.model;
  delete ctx.prefs.model;
  if (wanted && models.some(m => m.id === wanted)) {
    if (wanted !== state.model && !controller) { // another model: a fresh conversation
      state.messages = [];
      setResponseId("");
      fill(log, h("p", {class: "empty hint-empty"}, "Say hello to start a conversation."));
    }
    state.model = wanted;
  } else state.model = models[0]?.id || "";
  modelSelect.value = state.model;
  limitTokens();
  showSnippet();
  return () => { observer.disconnect(); controller?.abort(); };
}
