// The yizhan console: plain JavaScript over the admin API (docs/openapi.yaml). Every value
// from the server reaches the page through textContent, never as HTML.
"use strict";

const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);
const selected = new Set();
let tab = "dashboard";
let previous = null; // the last totals, for the rates
let terminal = null; // the AbortController of an open terminal

function token() {
  return sessionStorage.getItem("yizhan-token") || "";
}

function say(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

// One API call: JSON in and out, the token (if any) in the Authorization header.
async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  Object.assign(headers, options.headers || {});
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(path, {
    method: options.body !== undefined ? "POST" : "GET",
    headers,
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
    signal: options.signal,
  });
  if (answer.status === 401 && !(options.headers || {}).Authorization) {
    $("login").hidden = false;
    throw new Error("the admin token is required");
  }
  if (options.stream) return answer;
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.error || body.message || answer.statusText);
  return body;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

function age(seconds) {
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min";
  if (seconds < 86400) return (seconds / 3600).toFixed(1) + " h";
  return (seconds / 86400).toFixed(1) + " days";
}

function stateOf(m) {
  const pending = m.recipients.filter((r) => r.state === "pending");
  if (m.held) return "held";
  if (pending.some((r) => r.attempts > 0)) return "deferred";
  return pending.length ? "active" : "done";
}

async function dashboard() {
  const s = await api("/api/stats");
  $("hostname").textContent = s.hostname;
  const q = s.queue.by_state || {};
  $("q-active").textContent = q.active ?? "?";
  $("q-deferred").textContent = q.deferred ?? "?";
  $("q-held").textContent = q.held ?? "?";
  $("q-oldest").textContent = s.queue.oldest_seconds ? age(s.queue.oldest_seconds) : "none";
  $("s-open").textContent = s.sessions;
  for (const k of ["accepted", "delivered", "deferred", "bounced"]) {
    $("t-" + k).textContent = s.totals[k];
    if (previous && s.now > previous.now) {
      const rate = ((s.totals[k] - previous.totals[k]) * 60) / (s.now - previous.now);
      $("r-" + k).textContent = rate.toFixed(1);
    }
  }
  if (!previous || s.now - previous.now >= 10) previous = s;
}

function queueQuery() {
  const form = new FormData($("queue-filter"));
  const query = new URLSearchParams();
  for (const [k, v] of form) if (v) query.set(k, v);
  query.set("limit", "500");
  return query.toString();
}

async function queue() {
  const page = await api("/api/queue?" + queueQuery());
  $("queue-total").textContent = page.total + (page.total === 1 ? " message" : " messages");
  const rows = $("queue-rows");
  rows.replaceChildren();
  const shown = new Set();
  for (const m of page.messages) {
    shown.add(m.id);
    const row = rows.insertRow();
    row.dataset.id = m.id;
    row.className = "clickable";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = selected.has(m.id);
    box.addEventListener("click", (e) => {
      e.stopPropagation();
      box.checked ? selected.add(m.id) : selected.delete(m.id);
    });
    row.insertCell().append(box);
    const id = cell(row, "");
    const code = document.createElement("code");
    code.textContent = m.id;
    id.append(code);
    cell(row, when(m.received_at));
    cell(row, m.size);
    cell(row, m.sender || "<>");
    const pending = m.recipients.filter((r) => r.state === "pending");
    cell(row, pending.map((r) => r.address).join(", "));
    const state = stateOf(m);
    cell(row, state, "state state-" + state);
    cell(row, pending.map((r) => r.last_error).filter(Boolean).join("; "));
    row.addEventListener("click", () => show(m.id));
  }
  for (const id of [...selected]) if (!shown.has(id)) selected.delete(id);
}

async function show(id, body = false) {
  const m = await api("/api/queue/" + id + (body ? "?body=true" : ""));
  $("message").hidden = false;
  $("message-id").textContent = m.message.id;
  const table = $("message-recipients");
  table.replaceChildren();
  for (const r of m.message.recipients) {
    const row = table.insertRow();
    cell(row, r.address);
    cell(row, r.state);
    cell(row, r.attempts + (r.attempts === 1 ? " attempt" : " attempts"));
    cell(row, r.detail || r.last_error || "");
  }
  const log = $("message-log");
  log.replaceChildren();
  for (const d of m.log || []) {
    const row = log.insertRow();
    cell(row, when(d.at));
    cell(row, d.outcome, "outcome outcome-" + d.outcome);
    cell(row, d.recipient);
    cell(row, d.detail);
  }
  $("message-session").hidden = !m.message.recording;
  $("message-session-text").hidden = true;
  if (m.message.recording) {
    $("message-session-id").textContent = m.message.recording;
    $("message-session-button").onclick = () => showSession(m.message.recording).catch(fail);
  }
  $("message-headers").textContent = m.headers;
  $("message-body").hidden = !body;
  $("message-body").textContent = m.body || "";
  $("message-body-button").onclick = () => show(id, true).catch(fail);
}

// The recorded session that brought a message, line by line (C:, S:, -- for notes).
async function showSession(id) {
  const r = await api("/api/recordings/" + encodeURIComponent(id));
  const who = { c: "C:", s: "S:", n: "--" };
  $("message-session-text").textContent = r.entries
    .map((e) => `${(e.t / 1000).toFixed(3).padStart(7)} ${who[e.d] || "--"} ${e.x}`)
    .join("\n");
  $("message-session-text").hidden = false;
}

async function act(action) {
  const ids = [...selected];
  if (!ids.length) return say("Select messages first.", true);
  const button = document.querySelector(`[data-action="${action}"]`);
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  const done = await api("/api/queue/actions", { body: { action, ids } });
  const verbs = { hold: "held", release: "released", flush: "flushed", requeue: "requeued",
    bounce: "bounced", delete: "deleted" };
  let text = `${verbs[action]} ${done.messages} ${done.messages === 1 ? "message" : "messages"}`;
  if (done.errors.length) text += "; " + done.errors.map((e) => e.error).join("; ");
  say(text, done.errors.length > 0);
  selected.clear();
  await queue();
}

async function sessions() {
  const { sessions } = await api("/api/sessions");
  const rows = $("session-rows");
  rows.replaceChildren();
  for (const s of sessions) {
    const row = rows.insertRow();
    for (const v of [s.id, s.client, s.listener, when(s.started), s.helo, s.tls, s.user,
      s.command, s.commands, s.messages]) cell(row, v);
  }
}

async function deliveries() {
  const address = new FormData($("delivery-filter")).get("address");
  const query = address ? "?address=" + encodeURIComponent(address) : "";
  const { deliveries } = await api("/api/deliveries" + query);
  const rows = $("delivery-rows");
  rows.replaceChildren();
  for (const d of deliveries) {
    const row = rows.insertRow();
    cell(row, when(d.at));
    cell(row, d.outcome, "outcome outcome-" + d.outcome);
    cell(row, d.queue_id);
    cell(row, d.recipient);
    cell(row, d.sender || "<>");
    cell(row, d.detail);
  }
}

async function config() {
  const c = await api("/api/config");
  $("config-summary").textContent = c.summary.join("\n");
}

// A terminal: the Server-Sent Events of /api/terminal read with fetch (an EventSource could
// not send the token header).
// With the user's own password (HTTP Basic) a mail user opens their own terminal without the
// admin token.
async function openTerminal(user, password) {
  closeTerminal();
  terminal = new AbortController();
  $("terminal-close").disabled = false;
  const query = "/api/terminal?user=" + encodeURIComponent(user);
  const headers = {};
  if (password) {
    const bytes = new TextEncoder().encode(user + ":" + password);
    headers.Authorization = "Basic " + btoa(String.fromCharCode(...bytes));
  }
  const answer = await api(query, { stream: true, signal: terminal.signal, headers });
  if (!answer.ok) {
    const why = (await answer.text()).trim();
    closeTerminal();
    throw new Error("cannot open the terminal: " + why);
  }
  $("terminal-state").textContent = `This is ${user}'s terminal.`;
  const reader = answer.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block);
      const data = block.split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (event && event[1] === "message") showOnTerminal(JSON.parse(data));
    }
  }
  $("terminal-state").textContent = "The terminal is closed.";
}

function showOnTerminal(m) {
  const div = document.createElement("div");
  div.className = "terminal-message";
  div.textContent = `Message from ${m.from || "MAILER-DAEMON"} (${m.verb}) at ${when(m.at)}\n\n`
    + m.text.replace(/\r\n/g, "\n");
  $("terminal-messages").prepend(div);
}

function closeTerminal() {
  if (terminal) terminal.abort();
  terminal = null;
  $("terminal-close").disabled = true;
}

const views = { dashboard, queue, sessions, deliveries, config, terminal: async () => {} };

function fail(e) {
  if (e.name !== "AbortError") say(e.message, true);
}

async function refresh() {
  try {
    await views[tab]();
    if ($("status").className === "error" && $("login").hidden) say("");
  } catch (e) {
    fail(e);
  }
}

function select(name) {
  tab = name;
  for (const b of document.querySelectorAll("nav button")) {
    b.classList.toggle("active", b.dataset.tab === name);
  }
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== name;
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("nav button")) {
    b.addEventListener("click", () => select(b.dataset.tab));
  }
  for (const b of document.querySelectorAll("#queue-actions button")) {
    b.addEventListener("click", () => act(b.dataset.action).catch(fail));
  }
  $("select-all").addEventListener("change", (e) => {
    for (const row of $("queue-rows").rows) {
      const box = row.querySelector("input");
      box.checked = e.target.checked;
      box.checked ? selected.add(row.dataset.id) : selected.delete(row.dataset.id);
    }
  });
  $("queue-filter").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  $("delivery-filter").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("yizhan-token", $("token").value);
    $("login").hidden = true;
    say("");
    refresh();
  });
  $("terminal-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    const user = form.get("user");
    if (user) openTerminal(user, form.get("password")).catch(fail);
  });
  $("terminal-close").addEventListener("click", closeTerminal);
  $("reload").addEventListener("click", async () => {
    try {
      const r = await api("/api/reload", { body: {} });
      say(r.needs_restart && r.needs_restart.length
        ? "Reloaded; needs a restart: " + r.needs_restart.join(", ") : "Reloaded.");
      await config();
    } catch (e) {
      fail(e);
    }
  });
  select("dashboard");
  setInterval(() => { if (tab !== "terminal" && tab !== "config") refresh(); }, REFRESH_MS);
});
