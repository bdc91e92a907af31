// BetterAuth behind node:http with its node handler, for bench/peers.
//
// One process, one configuration, from the environment:
//   BA_PORT          port on 127.0.0.1
//   BA_BASE_URL      http://127.0.0.1:<port>
//   BA_SECRET        signing secret (>= 32 characters)
//   BA_DATABASE      sqlite:<file>  or  postgres:<connection string>
//   BA_COOKIE_CACHE  "1": session.cookieCache enabled (max age 300 s)
//   BA_REDIS_URL     set: secondaryStorage on Redis (ioredis), keys under BA_REDIS_PREFIX
//
// Creates its schema with BetterAuth's own migrations (better-auth/db), then
// prints "listening <base url>" on stdout.
import http from "node:http";
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";
import Database from "better-sqlite3";
import pg from "pg";
import { Redis } from "ioredis";

const env = process.env;
const port = Number(env.BA_PORT);
const [kind, ...rest] = env.BA_DATABASE.split(":");
const location = rest.join(":");

let database;
if (kind === "sqlite") {
  database = new Database(location);
  // WAL, as session-ledger's SQLite store runs: readers never wait for a writer.
  database.pragma("journal_mode = WAL");
} else if (kind === "postgres") {
  database = new pg.Pool({ connectionString: location, max: 10 });
} else {
  throw new Error(`BA_DATABASE must start with sqlite: or postgres:, not ${kind}`);
}

let secondaryStorage;
let redis;
if (env.BA_REDIS_URL) {
  redis = new Redis(env.BA_REDIS_URL);
  const prefix = env.BA_REDIS_PREFIX ?? "better-auth:";
  // INCR, with the TTL set only when the key is new (the contract of increment).
  redis.defineCommand("incrementWithTtl", {
    numberOfKeys: 1,
    lua: "local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return n",
  });
  secondaryStorage = {
    get: (key) => redis.get(prefix + key),
    set: (key, value, ttl) =>
      ttl ? redis.set(prefix + key, value, "EX", ttl) : redis.set(prefix + key, value),
    delete: (key) => redis.del(prefix + key),
    getAndDelete: (key) => redis.getdel(prefix + key),
    increment: (key, ttl) => redis.incrementWithTtl(prefix + key, ttl),
  };
}

const options = {
  baseURL: env.BA_BASE_URL,
  secret: env.BA_SECRET,
  database,
  secondaryStorage,
  emailAndPassword: { enabled: true },
  // Same as session-ledger's test environment: no rate limits in the way of a benchmark.
  rateLimit: { enabled: false },
  session: {
    cookieCache: { enabled: env.BA_COOKIE_CACHE === "1", maxAge: 300 },
  },
  telemetry: { enabled: false },
};

const auth = betterAuth(options);
const { runMigrations } = await getMigrations(auth.options);
await runMigrations();

const handler = toNodeHandler(auth);
const server = http.createServer((req, res) => handler(req, res));
server.keepAliveTimeout = 65_000;
server.listen(port, "127.0.0.1", () => {
  console.log(`listening ${env.BA_BASE_URL}`);
});

const stop = () => {
  server.close();
  server.closeAllConnections();
  Promise.resolve(kind === "postgres" ? database.end() : database.close())
    .then(() => redis?.quit())
    .finally(() => process.exit(0));
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
