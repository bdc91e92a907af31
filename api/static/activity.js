// The "Activity" panel of the demo page: failed sign-ins on the account since
// the last visit, by network (GET /api/auth/audit/failed-sign-ins), the
// signed-in user's own history as a timeline (GET /api/auth/audit/activity,
// failed sign-ins included) and, for admins, a
// chart of sign-ins / revocations / expiries per day
// (GET /api/auth/admin/audit/counts). Plain DOM and inline SVG, no library.
"use strict";

(() => {
  const API = "/api/auth";
  const DAYS = 14;
  const SERIES = [
    { type: "SessionCreated", label: "sign-ins", color: "#2f6fde" },
    { type: "SessionRevoked", label: "revocations", color: "#d9534f" },
    { type: "SessionExpired", label: "expiries", color: "#8a8f99" },
    { type: "SignInFailed", label: "failed sign-ins", color: "#e0a100" },
  ];
  const LABELS = {
    SessionCreated: "signed in",
    SessionRefreshed: "session extended",
    SessionRotated: "token rotated",
    SessionTouched: "active",
    SessionUpdated: "session updated",
    SessionReauthenticated: "re-authenticated",
    SessionRevoked: "signed out / revoked",
    SessionExpired: "expired",
    SignInFailed: "failed sign-in",
  };
  const SVG = "http://www.w3.org/2000/svg";

  async function get(path) {
    const response = await fetch(API + path, { credentials: "include" });
    if (!response.ok) throw new Error(String(response.status));
    return response.json();
  }

  function el(tag, attrs = {}, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text != null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text != null) node.textContent = String(text);
    return node;
  }

  function timeline(items) {
    const list = el("ol", { class: "activity-timeline" });
    let day = "";
    // Newest first: the API pages oldest first, the eye wants the latest on top.
    for (const e of [...items].reverse()) {
      const d = e.recordedAt.slice(0, 10);
      if (d !== day) {
        day = d;
        list.appendChild(el("li", { class: "activity-day" }, new Date(d).toDateString()));
      }
      const item = el("li", { class: "activity-event", "data-type": e.type });
      item.appendChild(el("time", { datetime: e.recordedAt }, new Date(e.recordedAt).toLocaleTimeString()));
      item.appendChild(el("span", { class: "type" }, ` ${LABELS[e.type] || e.type}`));
      const details = [e.ip, e.reason, e.actor !== `user:${e.userId}` ? e.actor : null]
        .filter(Boolean)
        .join(" · ");
      if (details) item.appendChild(el("span", { class: "meta" }, ` — ${details}`));
      if (e.type !== "SignInFailed") {
        item.appendChild(el("span", { class: "meta" }, ` (session ${e.sessionId.slice(0, 8)}…)`));
      }
      list.appendChild(item);
    }
    if (!items.length) list.appendChild(el("li", {}, "No activity in the last week."));
    return list;
  }

  // "3 failed sign-ins from 203.0.113.0/24 since your last visit"
  function failedSignIns(summary) {
    if (!summary.total) return null;
    const box = el("div", { class: "failed-sign-ins", role: "alert" });
    const since = summary.since ? "since your last visit" : "on this account";
    for (const n of summary.networks) {
      const plural = n.count === 1 ? "" : "s";
      const last = new Date(n.lastAt).toLocaleString();
      box.appendChild(
        el("p", {}, `${n.count} failed sign-in${plural} from ${n.network} ${since} (last ${last})`),
      );
    }
    return box;
  }

  function chart(counts) {
    const days = [];
    const today = new Date();
    for (let i = DAYS - 1; i >= 0; i--) {
      const d = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i));
      days.push(d.toISOString().slice(0, 10));
    }
    const value = (day, type) =>
      (counts.find((c) => c.day === day && c.type === type) || { count: 0 }).count;
    const max = Math.max(1, ...counts.map((c) => c.count));
    const width = 560, height = 180, pad = 24, slot = (width - pad * 2) / DAYS;
    const bar = (slot - 4) / SERIES.length;
    const root = svg("svg", { viewBox: `0 0 ${width} ${height + 40}`, role: "img", class: "activity-chart" });
    root.appendChild(svg("title", {}, `Sign-ins, revocations and expiries per day (last ${DAYS} days)`));
    root.appendChild(svg("text", { x: 0, y: 12, "font-size": 10 }, String(max)));
    days.forEach((day, i) => {
      SERIES.forEach((s, j) => {
        const n = value(day, s.type);
        const h = (n / max) * (height - pad);
        const rect = svg("rect", {
          x: pad + i * slot + j * bar, y: height - h, width: bar, height: h, fill: s.color,
        });
        rect.appendChild(svg("title", {}, `${day}: ${n} ${s.label}`));
        root.appendChild(rect);
      });
      if (i % 2 === 0) {
        root.appendChild(svg("text", { x: pad + i * slot, y: height + 14, "font-size": 9 }, day.slice(5)));
      }
    });
    SERIES.forEach((s, j) => {
      root.appendChild(svg("rect", { x: pad + j * 120, y: height + 24, width: 10, height: 10, fill: s.color }));
      root.appendChild(svg("text", { x: pad + j * 120 + 14, y: height + 33, "font-size": 11 }, s.label));
    });
    return root;
  }

  async function render() {
    const box = document.getElementById("activity");
    if (!box) return;
    const session = await get("/get-session").catch(() => null);
    if (!session || !session.user) {
      box.replaceChildren();
      return;
    }
    const parts = [el("h2", {}, "Activity")];
    const failed = await get("/audit/failed-sign-ins").catch(() => null);
    const warning = failed && failedSignIns(failed);
    if (warning) parts.push(warning);
    try {
      const mine = await get("/audit/activity?since=7d&limit=500");
      parts.push(timeline(mine.items));
    } catch (error) {
      parts.push(el("p", { class: "error" }, "Activity is unavailable."));
    }
    if ((session.user.roles || []).includes("admin")) {
      const types = SERIES.map((s) => `type=${s.type}`).join("&");
      const counts = await get(`/admin/audit/counts?since=${DAYS}d&${types}`).catch(() => null);
      if (counts) {
        parts.push(el("h3", {}, "All users, per day"));
        parts.push(chart(counts.items));
      }
    }
    box.replaceChildren(...parts);
  }

  // app.js owns sign-in and the history list; re-render when either changes.
  let pending = null;
  function schedule() {
    clearTimeout(pending);
    pending = setTimeout(render, 150);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const observer = new MutationObserver(schedule);
    for (const id of ["signed-in", "history"]) {
      const node = document.getElementById(id);
      if (node) observer.observe(node, { attributes: true, attributeFilter: ["hidden"], childList: true });
    }
    schedule();
  });
})();
