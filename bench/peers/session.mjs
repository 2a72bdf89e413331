// Peer: express + express-session, answering the same forward-auth check as
// Tessera's GET /v1/verify. The store is express-session's MemoryStore, or
// with REDIS_URL connect-redis on the `redis` client (one connection,
// sessions as JSON strings under `sess:<id>`, express-session's defaults:
// every check reads the session and then touches it, EXPIRE, before it
// answers). At start-up it puts SESSIONS live sessions (of USERS users)
// straight into the store and writes their signed cookie values, one a
// line, to COOKIES for wrk.
//
// env: PORT, SESSIONS, USERS, COOKIES, REDIS_URL (optional)
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import signature from "cookie-signature";
import express from "express";
import session from "express-session";

const { PORT, SESSIONS = "100000", USERS = "10000", COOKIES, REDIS_URL } = process.env;
const secret = randomBytes(32).toString("hex");
const maxAge = 30 * 86400 * 1000;

let store;
if (REDIS_URL) {
  const { createClient } = await import("redis");
  const { RedisStore } = await import("connect-redis");
  const client = createClient({ url: REDIS_URL });
  client.on("error", (err) => console.error("redis:", err));
  await client.connect();
  store = new RedisStore({ client });
} else {
  store = new session.MemoryStore();
}

const lines = [];
let pending = [];
for (let i = 0; i < Number(SESSIONS); i++) {
  const sid = randomBytes(32).toString("base64url");
  const cookie = { originalMaxAge: maxAge, expires: new Date(Date.now() + maxAge), httpOnly: true, path: "/", sameSite: "lax" };
  const data = { cookie, userId: `usr_${i % Number(USERS)}`, roles: [] };
  pending.push(new Promise((resolve, reject) => store.set(sid, data, (err) => (err ? reject(err) : resolve()))));
  if (pending.length === 1000) {
    await Promise.all(pending); // the client pipelines what one tick sends
    pending = [];
  }
  lines.push(encodeURIComponent("s:" + signature.sign(sid, secret)));
}
await Promise.all(pending);
writeFileSync(COOKIES, lines.join("\n") + "\n");

const app = express();
app.disable("x-powered-by");
app.use(session({
  secret, store, name: "connect.sid", resave: false, saveUninitialized: false,
  cookie: { httpOnly: true, sameSite: "lax", maxAge },
}));
app.get("/v1/verify", (req, res) => {
  if (!req.session.userId) return res.status(401).end();
  res.set({ "X-Auth-User": req.session.userId, "X-Auth-Roles": req.session.roles.join(","), "X-Auth-Method": "session" });
  res.status(200).end();
});
app.listen(Number(PORT), "127.0.0.1");
