// The demo page: plain fetch against /api/auth, cookies sent with every call.
"use strict";

const API = "/api/auth";
const $ = (selector) => document.querySelector(selector);

async function call(path, { method = "GET", body } = {}) {
  const response = await fetch(API + path, {
    method,
    credentials: "include",
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error((data && data.message) || response.statusText);
    error.code = data && data.code;
    error.status = response.status;
    throw error;
  }
  return data;
}

function say(text, isError = false) {
  const box = $("#message");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  row.appendChild(td);
  return td;
}

const EVENT_NAMES = {
  SessionCreated: "created",
  SessionRefreshed: "refreshed",
  SessionRotated: "token rotated",
  SessionTouched: "active",
  SessionUpdated: "updated",
  SessionReauthenticated: "re-authenticated",
  SessionRevoked: "revoked",
  SessionExpired: "expired",
};

async function showSessions() {
  const sessions = await call("/list-sessions");
  const body = $("#sessions tbody");
  body.replaceChildren();
  for (const s of sessions) {
    const row = document.createElement("tr");
    row.dataset.sessionId = s.id;
    if (s.current) row.className = "current";
    cell(row, s.device);
    cell(row, s.ipAddress || "unknown");
    cell(row, when(s.lastActive));
    const actions = cell(row, "");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "danger revoke";
    button.textContent = "Revoke";
    button.addEventListener("click", () => revoke(s.id, s.current));
    actions.appendChild(button);
    body.appendChild(row);
  }
}

async function showHistory() {
  const { events } = await call("/session-history?limit=50");
  const list = $("#history");
  list.replaceChildren();
  for (const e of events) {
    const item = document.createElement("li");
    const type = document.createElement("span");
    type.className = "type";
    type.textContent = EVENT_NAMES[e.type] || e.type;
    const meta = document.createElement("span");
    meta.className = "meta";
    const parts = [when(e.at), "session " + e.sessionId.slice(-8)];
    if (e.reason) parts.push("reason: " + e.reason);
    if (e.type === "SessionRevoked" || e.type === "SessionCreated") parts.push("by " + e.actor);
    if (e.device) parts.push(e.device);
    if (e.ipAddress) parts.push(e.ipAddress);
    meta.textContent = " — " + parts.join(" · ");
    item.append(type, meta);
    list.appendChild(item);
  }
}

async function refresh() {
  const current = await call("/get-session").catch(() => null);
  $("#signed-out").hidden = !!current;
  $("#signed-in").hidden = !current;
  if (!current) return;
  $("#user-name").textContent = current.user.name || current.user.email;
  $("#user-email").textContent = current.user.email;
  try {
    await Promise.all([showSessions(), showHistory()]);
  } catch (error) {
    if (error.status === 401) return refresh();
    say(error.message, true);
  }
}

async function revoke(id, isCurrent) {
  try {
    await call("/revoke-session", { method: "POST", body: { token: id } });
    say(isCurrent ? "Signed out." : "Session revoked.");
  } catch (error) {
    say(error.message, true);
  }
  await refresh();
}

function formData(form) {
  const data = Object.fromEntries(new FormData(form));
  data.rememberMe = form.elements.rememberMe.checked;
  return data;
}

function onSubmit(selector, path) {
  $(selector).addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await call(path, { method: "POST", body: formData(event.target) });
      event.target.reset();
      say("");
    } catch (error) {
      say(error.message, true);
    }
    await refresh();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  onSubmit("#signup-form", "/sign-up/email");
  onSubmit("#signin-form", "/sign-in/email");
  $("#sign-out").addEventListener("click", async () => {
    await call("/sign-out", { method: "POST" }).catch(() => null);
    say("Signed out.");
    await refresh();
  });
  $("#revoke-others").addEventListener("click", async () => {
    try {
      await call("/revoke-other-sessions", { method: "POST" });
      say("All other sessions revoked.");
    } catch (error) {
      say(error.message, true);
    }
    await refresh();
  });
  refresh();
});
