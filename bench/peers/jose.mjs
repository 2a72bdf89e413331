// Peer: express + jose verifying Tessera's EdDSA access tokens as a resource
// server would: from Tessera's JWKS, with the same checks (algorithm, typ,
// issuer, audience, expiry). No cache: every request checks the signature.
//
// env: PORT, JWKS (a file with Tessera's JWKS document), ISSUER, AUDIENCE
import { readFileSync } from "node:fs";
import express from "express";
import { createLocalJWKSet, jwtVerify } from "jose";

const { PORT, JWKS, ISSUER, AUDIENCE = ISSUER } = process.env;
const keys = createLocalJWKSet(JSON.parse(readFileSync(JWKS, "utf8")));
const options = { issuer: ISSUER, audience: AUDIENCE, algorithms: ["EdDSA"], typ: "at+jwt" };

const app = express();
app.disable("x-powered-by");
app.get("/v1/verify", async (req, res) => {
  const auth = req.headers.authorization ?? "";
  if (!auth.startsWith("Bearer ")) return res.status(401).end();
  try {
    const { payload } = await jwtVerify(auth.slice(7), keys, options);
    res.set({ "X-Auth-User": payload.sub, "X-Auth-Roles": (payload.roles ?? []).join(","), "X-Auth-Method": "jwt" });
    res.status(200).end();
  } catch {
    res.status(401).end();
  }
});
app.listen(Number(PORT), "127.0.0.1");
