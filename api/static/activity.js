// The "History" panel of the demo page, the one view of the history: failed
// sign-ins on the account since the last visit, by network
// (GET /api/auth/audit/failed-sign-ins), the signed-in user's own events as a
// timeline by day (GET /api/auth/audit/activity, failed sign-ins included)
// and, for admins, a chart of sign-ins / revocations / expiries / failed
// sign-ins per day (GET /api/auth/admin/audit/counts). Plain DOM and inline
// SVG, no library; words.js turns codes into words.
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
    SessionRevoked: "ended",
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

  function timeline(items, session) {
    const words = window.ledgerWords;
    const me = session.user.id;
    const list = el("ol", { class: "activity-timeline" });
    let day = "";
    // Newest first: the API pages oldest first, the eye wants the latest on top.
    for (const e of [...items].reverse()) {
      const at = new Date(e.recordedAt);
      const d = at.toDateString();
      if (d !== day) {
        day = d;
        list.appendChild(el("li", { class: "activity-day" }, d));
      }
      const item = el("li", { class: "activity-event", "data-type": e.type });
      item.appendChild(el("time", { datetime: e.recordedAt }, at.toLocaleTimeString()));
      const failed = e.type === "SignInFailed";
      const why = failed ? words.failure(e.reason) : words.reason(e.reason);
      item.appendChild(el("span", { class: "type" }, ` ${why || LABELS[e.type] || e.type}`));
      const ended = e.type === "SessionRevoked" || e.type === "SessionExpired";
      const details = [
        ended ? `by ${words.actor(e.actor, me)}` : null,
        e.device,
        e.ip,
      ].filter(Boolean);
      if (details.length) item.appendChild(el("span", { class: "meta" }, ` — ${details.join(" · ")}`));
      // A failed sign-in started no session: its stream is the attempt's own.
      if (!failed) {
        const here = e.sessionId === session.session.id ? ", this device" : "";
        item.appendChild(
          el("span", { class: "meta session-id" }, ` (session ${words.shortId(e.sessionId)}${here})`),
        );
      }
      list.appendChild(item);
    }
    if (!items.length) list.appendChild(el("li", {}, "No activity in the last week."));
    return list;
  }

  // "3 failed sign-ins from 203.0.113.0/24 since your last visit (last ...)"
  function failedSignIns(summary) {
    if (!summary.total) return null;
    const box = el("div", { class: "failed-sign-ins", role: "alert" });
    for (const n of summary.networks) {
      box.appendChild(el("p", {}, window.ledgerWords.failedSignIns(n, summary.since)));
    }
    return box;
  }

  // 1, 2, 5, 10, 20, 50, ...: the smallest such step giving at most ``ticks`` ticks.
  function niceStep(max, ticks) {
    for (let base = 1; ; base *= 10) {
      for (const m of [1, 2, 5]) {
        if (max / (m * base) <= ticks) return m * base;
      }
    }
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
    const step = niceStep(max, 4);
    const top = Math.ceil(max / step) * step;
    // Plot area inside the margins: a y axis with its scale on the left,
    // dates under the x axis, the legend at the bottom.
    const left = 40, right = 8, upper = 16, plot = 170, width = 600;
    const bottom = upper + plot, slot = (width - left - right) / DAYS;
    const bar = (slot - 6) / SERIES.length;
    const y = (n) => bottom - (n / top) * plot;
    const root = svg("svg", { viewBox: `0 0 ${width} ${bottom + 58}`, role: "img", class: "activity-chart" });
    root.appendChild(svg("title", {}, `Sign-ins, revocations, expiries and failed sign-ins per day (last ${DAYS} days, UTC)`));
    root.appendChild(svg("text", { x: 0, y: 10, "font-size": 10, class: "axis-title" }, "events per day (UTC)"));
    for (let n = 0; n <= top; n += step) {
      root.appendChild(svg("line", { x1: left, x2: width - right, y1: y(n), y2: y(n), class: "grid" }));
      root.appendChild(
        svg("text", { x: left - 6, y: y(n) + 3, "font-size": 10, "text-anchor": "end", class: "tick" }, String(n)),
      );
    }
    root.appendChild(svg("line", { x1: left, x2: left, y1: upper, y2: bottom, class: "axis" }));
    root.appendChild(svg("line", { x1: left, x2: width - right, y1: bottom, y2: bottom, class: "axis" }));
    const label = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
    days.forEach((day, i) => {
      const x = left + i * slot + 3;
      SERIES.forEach((s, j) => {
        const n = value(day, s.type);
        const rect = svg("rect", { x: x + j * bar, y: y(n), width: bar, height: bottom - y(n), fill: s.color });
        rect.appendChild(svg("title", {}, `${day}: ${n} ${s.label}`));
        root.appendChild(rect);
      });
      if ((DAYS - 1 - i) % 2 === 0) {  // every other day, today included
        const mid = left + (i + 0.5) * slot;
        root.appendChild(svg("line", { x1: mid, x2: mid, y1: bottom, y2: bottom + 4, class: "axis" }));
        root.appendChild(
          svg("text", { x: mid, y: bottom + 16, "font-size": 10, "text-anchor": "middle", class: "tick" },
            label.format(new Date(`${day}T00:00:00Z`))),
        );
      }
    });
    SERIES.forEach((s, j) => {
      root.appendChild(svg("rect", { x: left + j * 120, y: bottom + 34, width: 10, height: 10, fill: s.color }));
      root.appendChild(svg("text", { x: left + j * 120 + 14, y: bottom + 43, "font-size": 11 }, s.label));
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
    const parts = [el("h2", {}, "History")];
    const failed = await get("/audit/failed-sign-ins").catch(() => null);
    const warning = failed && failedSignIns(failed);
    if (warning) parts.push(warning);
    try {
      const mine = await get("/audit/activity?since=7d&limit=500");
      parts.push(timeline(mine.items, session));
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

  // app.js owns sign-in and the sessions table; re-render when either changes.
  let pending = null;
  function schedule() {
    clearTimeout(pending);
    pending = setTimeout(render, 150);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const observer = new MutationObserver(schedule);
    const signedIn = document.getElementById("signed-in");
    if (signedIn) observer.observe(signedIn, { attributes: true, attributeFilter: ["hidden"] });
    const sessions = document.querySelector("#sessions tbody");
    if (sessions) observer.observe(sessions, { childList: true });
    schedule();
  });
})();
