// The demo page: plain fetch against /api/auth, cookies sent with every call.
// The history of the sessions is activity.js's.
"use strict";

const API = "/api/auth";
const $ = (selector) => document.querySelector(selector);
const words = window.ledgerWords;

async function send(path, { method = "GET", body } = {}) {
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
  return { data, response };
}

async function call(path, options) {
  return (await send(path, options)).data;
}

function say(text, kind = "") {
  const box = $("#message");
  box.textContent = text;
  box.className = kind;
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

async function showSessions() {
  const sessions = await call("/list-sessions");
  const body = $("#sessions tbody");
  body.replaceChildren();
  for (const s of sessions) {
    const row = document.createElement("tr");
    row.dataset.sessionId = s.id;
    if (s.current) row.className = "current";
    cell(row, s.device);
    cell(row, words.shortId(s.id)).className = "session-id";
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
  const others = sessions.filter((s) => !s.current).length;
  const revokeOthers = $("#revoke-others");
  revokeOthers.disabled = others === 0;
  revokeOthers.title = others === 0 ? "No other sessions are signed in." : "";
}

async function refresh() {
  let current = null;
  try {
    const { data, response } = await send("/get-session");
    current = data;
    // A session ended elsewhere: the store says why (the answer also clears
    // this device's cookies, so this is said once).
    const ended = response.headers.get("x-session-ended");
    if (!current && ended) say(words.ended(ended), "notice");
  } catch (error) {
    say(error.message, "error");
  }
  $("#signed-out").hidden = !!current;
  $("#signed-in").hidden = !current;
  if (!current) return;
  $("#user-name").textContent = current.user.name || current.user.email;
  $("#user-email").textContent = current.user.email;
  try {
    await showSessions();
  } catch (error) {
    if (error.status === 401) return refresh();
    say(error.message, "error");
  }
}

async function revoke(id, isCurrent) {
  try {
    await call("/revoke-session", { method: "POST", body: { token: id } });
    say(isCurrent ? "Signed out." : "Session revoked.");
  } catch (error) {
    say(error.message, "error");
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
      say(error.message, "error");
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
      say(error.message, "error");
    }
    await refresh();
  });
  refresh();
});
