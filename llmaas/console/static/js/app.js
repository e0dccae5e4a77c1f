// The console shell: sign-in, navigation between views (hash routes that only choose what to show; no URL ever
// triggers an action), the signed-in identity from /v1/me, and a last-resort error banner so nothing fails silently.

import {ApiError, auth, get} from "./api.js";
import {field, fill, h, messageBox, showError} from "./dom.js";
import * as playground from "./views/playground.js";
import * as models from "./views/models.js";
import * as finetune from "./views/finetune.js";
import * as classifier from "./views/classifier.js";
import * as batches from "./views/batches.js";
import * as usage from "./views/usage.js";
import * as admin from "./views/admin.js";

const VIEWS = {playground, models, "fine-tuning": finetune, classifier, batches, usage, admin};

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const signoutBtn = document.getElementById("signout");
const notice = document.getElementById("notice");

/** Shared across views for the session: who is signed in and what a view hands to another. */
export const ctx = {me: null, prefs: {}, navigate};
let cleanup = null;

function navigate(view, sub = "") {
  const hash = `#/${view}${sub ? `/${encodeURIComponent(sub)}` : ""}`;
  if (location.hash === hash) route(); else location.hash = hash;
}

function parseHash() {
  const [view, sub] = location.hash.replace(/^#\/?/, "").split("/");
  return {view: VIEWS[view] ? view : "playground", sub: sub ? decodeURIComponent(sub) : ""};
}

/** Who am I: /v1/me, or (before the tenancy endpoints exist) a check that the key can list models. */
async function loadMe() {
  try {
    return await get("/v1/me");
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 404) throw err;
    await get("/v1/models");
    return {project_id: null, key_name: null, is_admin: false, limits: null, usage_this_month: null, partial: true};
  }
}

function showNotice(err) {
  notice.hidden = false;
  fill(notice, h("span", {}, err?.message || String(err)),
    h("button", {type: "button", class: "link", onclick: () => { notice.hidden = true; }}, "Dismiss"));
}
window.addEventListener("unhandledrejection", ev => showNotice(ev.reason));
window.addEventListener("error", ev => showNotice(ev.error || ev.message));

function renderSignIn(error) {
  nav.hidden = true;
  signoutBtn.hidden = true;
  who.textContent = "";
  const input = h("input", {type: "password", name: "key", autocomplete: "off", spellcheck: "false", required: true,
    placeholder: "sk-…", "aria-describedby": "signin-hint"});
  const slot = h("div", {class: "slot"});
  const button = h("button", {type: "submit", class: "primary"}, "Sign in");
  const form = h("form", {class: "card signin", "aria-labelledby": "signin-title"},
    h("h1", {id: "signin-title"}, "Sign in to llmaas"),
    field("API key", input),
    h("p", {id: "signin-hint", class: "hint"},
      "The key stays in this browser tab only (session storage) and is sent to this server alone. ",
      "If the server runs with --no-auth, any text works."),
    slot, button);
  if (error) showError(slot, error);
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    auth.signIn(key);
    try {
      ctx.me = await loadMe();
      await route();
    } catch (err) {
      auth.signOut();
      ctx.me = null;
      button.disabled = false;
      showError(slot, err);
    }
  });
  fill(main, form);
  input.focus();
}

function renderChrome() {
  const me = ctx.me || {};
  nav.hidden = false;
  signoutBtn.hidden = false;
  nav.querySelector('[data-view="admin"]').hidden = !me.is_admin;
  const bits = [];
  if (me.project_id) bits.push(`project ${me.project_id}`);
  if (me.key_name || me.key_prefix) bits.push(`key ${me.key_name || ""}${me.key_prefix ? ` (${me.key_prefix}…)` : ""}`.trim());
  if (me.is_admin) bits.push("admin");
  who.textContent = bits.join(" · ");
}

async function route() {
  if (cleanup) { try { cleanup(); } catch { /* a view's cleanup must not block navigation */ } cleanup = null; }
  if (!auth.key()) return renderSignIn();
  if (!ctx.me) {
    try {
      ctx.me = await loadMe();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) { auth.signOut(); return renderSignIn(err); }
      fill(main, messageBox("error", err.message));
      return;
    }
  }
  renderChrome();
  const {view, sub} = parseHash();
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const section = h("section", {class: `view view-${view}`, "aria-label": view});
  fill(main, section);
  if (view === "admin" && !ctx.me.is_admin) {
    fill(section, messageBox("error", "Only admin keys can open the admin page."));
    return;
  }
  try {
    cleanup = (await VIEWS[view].render(section, ctx, sub)) || null;
  } catch (err) {
    fill(section, messageBox("error", err.message || String(err)));
  }
}

signoutBtn.addEventListener("click", () => {
  auth.signOut();
  ctx.me = null;
  ctx.prefs = {};
  playground.reset();
  history.replaceState(null, "", "#/playground"); // no hashchange event: route once, below
  route();
});

// No form ever submits natively (that would reload the page with its fields in the URL): views handle `submit`.
document.addEventListener("submit", ev => ev.preventDefault(), true);
window.addEventListener("hashchange", route);
route();
