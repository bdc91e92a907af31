// Drives BetterAuth's own client (better-auth/client, createAuthClient)
// against a running session-ledger server: node drive.mjs <baseURL>.
// Node has no cookie jar, so each "browser" passes BetterAuth's client a
// fetch of its own (fetchOptions.customFetchImpl) that keeps the cookies
// the server sets and sends them back, with the Origin a browser sends.
// Prints one JSON line per step; exits 1 on the first failed expectation.
import assert from "node:assert/strict";
import { createAuthClient } from "better-auth/client";

const baseURL = process.argv[2];
if (!baseURL) throw new Error("usage: node drive.mjs <baseURL>");

function browser() {
  const jar = new Map();
  async function customFetchImpl(input, init) {
    const request = new Request(input, init);
    const headers = new Headers(request.headers);
    headers.set("origin", baseURL);
    if (jar.size) headers.set("cookie", [...jar].map(([k, v]) => `${k}=${v}`).join("; "));
    const response = await fetch(new Request(request, { headers }));
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(";");
      const at = pair.indexOf("=");
      const name = pair.slice(0, at).trim();
      const expired = attributes.some((a) => a.trim().toLowerCase() === "max-age=0");
      if (expired) jar.delete(name);
      else jar.set(name, pair.slice(at + 1).trim());
    }
    return response;
  }
  return createAuthClient({ baseURL, fetchOptions: { customFetchImpl } });
}

function step(name, value) {
  console.log(JSON.stringify({ step: name, value }));
  return value;
}

const email = `ada-${Date.now()}@example.com`;
const password = "correct horse battery";
const laptop = browser();
const phone = browser();

const up = await laptop.signUp.email({ email, password, name: "Ada" });
assert.equal(up.error, null, JSON.stringify(up.error));
assert.equal(step("signUp", up.data.user.email), email);

const bad = await browser().signUp.email({ email: "not-an-email", password, name: "X" });
assert.equal(step("signUp malformed email", bad.error.code), "INVALID_EMAIL");

const signedIn = await phone.signIn.email({ email, password });
assert.equal(signedIn.error, null, JSON.stringify(signedIn.error));
assert.equal(step("signIn", signedIn.data.user.email), email);

const mine = await laptop.getSession();
assert.equal(mine.error, null);
assert.equal(step("getSession", mine.data.user.email), email);
const phoneSession = (await phone.getSession()).data.session;
assert.ok(phoneSession.token);

const listed = await laptop.listSessions();
assert.equal(step("listSessions", listed.data.length), 2);

const revoked = await laptop.revokeSession({ token: phoneSession.token });
assert.equal(revoked.error, null, JSON.stringify(revoked.error));
assert.equal(step("revokeSession (token from getSession)", revoked.data.status), true);
assert.equal(step("phone after revokeSession", (await phone.getSession()).data), null);

const unknown = await laptop.revokeSession({ token: "no-such-token-0123456789abcdef" });
assert.equal(step("revokeSession (unknown token)", unknown.data.status), true);

await phone.signIn.email({ email, password });
const others = await laptop.revokeOtherSessions();
assert.equal(step("revokeOtherSessions", others.data.status), true);
assert.equal(step("phone after revokeOtherSessions", (await phone.getSession()).data), null);
assert.ok((await laptop.getSession()).data.session);

const updated = await laptop.updateSession({ theme: "dark" });
assert.equal(updated.error, null, JSON.stringify(updated.error));
assert.equal(step("updateSession", (await laptop.getSession()).data.session.theme), "dark");

await phone.signIn.email({ email, password });
const all = await laptop.revokeSessions();
assert.equal(step("revokeSessions", all.data.status), true);
assert.equal(step("laptop after revokeSessions", (await laptop.getSession()).data), null);
assert.equal(step("phone after revokeSessions", (await phone.getSession()).data), null);

await laptop.signIn.email({ email, password });
assert.ok((await laptop.getSession()).data.session);
const out = await laptop.signOut();
assert.equal(step("signOut", out.data.success), true);
assert.equal(step("laptop after signOut", (await laptop.getSession()).data), null);
console.log(JSON.stringify({ done: true }));
