#!/usr/bin/env python3
"""Verify a Tessera access token with PyJWT, a JOSE implementation Tessera
does not use, from the published JWKS.

usage: interop_verify.py JWKS_FILE TOKEN ISSUER AUDIENCE
Prints the verified claims as JSON; exits 1 (with the reason on stderr) when
the token does not verify.
"""
import json
import sys

import jwt


def main() -> int:
    jwks_file, token, issuer, audience = sys.argv[1:5]
    with open(jwks_file, encoding="utf-8") as f:
        jwks = json.load(f)
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt":
        print(f"unexpected typ {header.get('typ')!r}", file=sys.stderr)
        return 1
    matching = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
    if len(matching) != 1:
        print(f"kid {header.get('kid')!r} not in the JWKS", file=sys.stderr)
        return 1
    jwk = jwt.PyJWK(matching[0])
    try:
        claims = jwt.decode(
            token,
            jwk.key,
            algorithms=[matching[0]["alg"]],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )
    except jwt.PyJWTError as e:
        print(f"rejected: {e}", file=sys.stderr)
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
