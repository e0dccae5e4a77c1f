// Client-side check of a fine-tuning JSONL file (OpenAI chat format), for immediate, line-numbered feedback.
// The server validates again (it is the authority); this only saves a round trip for obvious mistakes.

// The same rules as the server's llmaas/training/files.py (chat or prompt/completion examples).
const ROLES = new Set(["system", "user", "assistant"]);
const MESSAGE_KEYS = new Set(["role", "content", "name", "weight"]);
const MAX_MESSAGES = 1024;

function checkExample(obj) {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) return "each line must be a JSON object";
  if ("messages" in obj) {
    const msgs = obj.messages;
    if (!Array.isArray(msgs) || !msgs.length) return "\"messages\" must be a non-empty list";
    if (msgs.length > MAX_MESSAGES) return `"messages" has more than ${MAX_MESSAGES} entries`;
    let assistant = 0;
    for (let i = 0; i < msgs.length; i++) {
      const m = msgs[i];
      if (typeof m !== "object" || m === null || Array.isArray(m)) return `message ${i + 1} must be an object`;
      if (!ROLES.has(m.role)) return `message ${i + 1}: role must be system, user or assistant (got ${JSON.stringify(m.role ?? null).slice(0, 40)})`;
      if (typeof m.content !== "string") return `message ${i + 1}: "content" must be a string`;
      const extra = Object.keys(m).filter(k => !MESSAGE_KEYS.has(k));
      if (extra.length) return `message ${i + 1} has unsupported keys: ${extra.join(", ").slice(0, 80)}`;
      if (m.role === "assistant") assistant++;
    }
    return assistant ? null : "no assistant message to learn from";
  }
  if ("prompt" in obj || "completion" in obj) {
    if (typeof obj.prompt !== "string" || typeof obj.completion !== "string") return "\"prompt\" and \"completion\" must both be strings";
    return obj.completion ? null : "\"completion\" must not be empty";
  }
  return "expected a chat example (\"messages\") or a prompt/completion example (\"prompt\", \"completion\")";
}

/** validateJsonl(text) -> {examples, errors: [{line, message}]} (at most maxErrors errors). */
export function validateJsonl(text, maxErrors = 50) {
  const errors = [];
  let examples = 0, extra = 0;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    if (!raw.trim()) return; // blank lines (e.g. the last newline) carry nothing
    let problem;
    try {
      problem = checkExample(JSON.parse(raw));
    } catch (err) {
      problem = `not valid JSON (${err.message})`;
    }
    if (problem) {
      if (errors.length < maxErrors) errors.push({line: i + 1, message: problem}); else extra++;
    } else examples++;
  });
  if (!examples && !errors.length) errors.push({line: 0, message: "the file is empty"});
  return {examples, errors, more: extra};
}

/** The file's text, or {line, message} for the first line that is not valid UTF-8 (the server refuses those). */
export function decodeUtf8(bytes) {
  try {
    return {text: new TextDecoder("utf-8", {fatal: true}).decode(bytes)};
  } catch {
    const strict = new TextDecoder("utf-8", {fatal: true});
    let start = 0, line = 1;
    for (let i = 0; i <= bytes.length; i++) {
      if (i === bytes.length || bytes[i] === 10) {
        try { strict.decode(bytes.subarray(start, i)); } catch { return {error: {line, message: "not valid UTF-8"}}; }
        start = i + 1;
        line++;
      }
    }
    return {error: {line: 0, message: "not valid UTF-8"}};
  }
}
