// Peer: express + express-session with its MemoryStore, answering the same
// forward-auth check as Tessera's GET /v1/verify. At start-up it puts
// SESSIONS live sessions (of USERS users) straight into the store and writes
// their signed cookie values, one a line, to COOKIES for wrk.
//
// env: PORT, SESSIONS, USERS, COOKIES
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import signature from "cookie-signature";
import express from "express";
import session from "express-session";

const { PORT, SESSIONS = "100000", USERS = "10000", COOKIES } = process.env;
const secret = randomBytes(32).toString("hex");
const store = new session.MemoryStore();
const maxAge = 30 * 86400 * 1000;

const lines = [];
for (let i = 0; i < Number(SESSIONS); i++) {
  const sid = randomBytes(32).toString("base64url");
  const cookie = { originalMaxAge: maxAge, expires: new Date(Date.now() + maxAge), httpOnly: true, path: "/", sameSite: "lax" };
  store.set(sid, { cookie, userId: `usr_${i % Number(USERS)}`, roles: [] }, () => {});
  lines.push(encodeURIComponent("s:" + signature.sign(sid, secret)));
}
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
