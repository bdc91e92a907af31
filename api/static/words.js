// Words for the ledger's codes, shared by the page's scripts: the short id
// of a session, who acted, why a session ended, why a sign-in failed. Loaded
// first.
"use strict";

window.ledgerWords = (() => {
  // Session ids are UUIDv7: the head is the creation time, shared by
  // sessions of the same minute; the tail is random. The tail tells them apart.
  const shortId = (id) => (id ? String(id).slice(-8) : "");

  // Actors as recorded: "user:<id>", "admin:<name>", "system", "system:expiry".
  function actor(recorded, me) {
    if (!recorded || recorded === "system" || recorded.startsWith("system:")) return "system";
    if (recorded === `user:${me}`) return "you";
    return "admin";
  }

  const REASONS = {
    sign_out: "signed out",
    revoked: "revoked from another device",
    revoked_others: "signed out from another device (all other sessions)",
    revoked_all: "all sessions signed out",
    token_reuse: "ended: its sign-in token was used twice",
    admin: "ended by an administrator",
    idle: "expired after inactivity",
    absolute: "reached its maximum lifetime",
  };
  const reason = (code) => (code ? REASONS[code] || code.replace(/_/g, " ") : "");

  // What a device whose session ended is told when it comes back.
  const ENDED = {
    revoked: "This session was ended from another device.",
    revoked_others: "This session was ended from another device.",
    revoked_all: "This session was ended from another device.",
    admin: "This session was ended by an administrator.",
    token_reuse: "This session was ended because its sign-in token was used twice. Sign in again.",
    idle: "Your session expired after a while without activity. Sign in again.",
    absolute: "Your session reached its maximum lifetime. Sign in again.",
    sign_out: "You were signed out.",
  };
  const ended = (code) => ENDED[code] || "Your session has ended. Sign in again.";

  // SignInFailed's reasons, as the account's owner reads them in the history.
  const FAILURES = {
    wrong_password: "failed sign-in: wrong password",
    unknown_email: "failed sign-in: unknown email",
    throttled: "failed sign-in: too many attempts, refused before the password was checked",
  };
  const failure = (code) => FAILURES[code] || "failed sign-in";

  // One network of the failed-sign-in summary (GET /audit/failed-sign-ins):
  // "3 failed sign-ins from 203.0.113.0/24 since your last visit (last 10:04:12)".
  function failedSignIns(network, since) {
    const plural = network.count === 1 ? "" : "s";
    const when = since ? "since your last visit" : "on this account";
    const last = new Date(network.lastAt).toLocaleString();
    return `${network.count} failed sign-in${plural} from ${network.network} ${when} (last ${last})`;
  }

  return { shortId, actor, reason, ended, failure, failedSignIns };
})();
