#!/usr/bin/env python3
"""ES256 test material for the benchmark, standard library + the `openssl` CLI only.

    es256.py jwks  KEY.pem KID                 -> JWKS (JSON) with the public key of KEY.pem
    es256.py token KEY.pem KID CLAIMS.json [N] -> N tokens (default 1), one per line; each
                                                  token gets a distinct `jti` when N > 1

The key is made by `openssl ecparam -name prime256v1 -genkey -noout -out KEY.pem`.
`openssl dgst -sha256 -sign` returns a DER `SEQUENCE { INTEGER r, INTEGER s }`; JOSE wants
the raw 64-byte `r || s` (RFC 7518 §3.4), which is what `der_to_jose` converts to.
"""

import base64
import json
import subprocess
import sys


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def der_len(der: bytes, i: int):
    """Reads a DER length at der[i]; returns (length, index of the first content byte)."""
    first = der[i]
    if first < 0x80:
        return first, i + 1
    n = first & 0x7F
    return int.from_bytes(der[i + 1 : i + 1 + n], "big"), i + 1 + n


def der_to_jose(der: bytes) -> bytes:
    if der[0] != 0x30:
        raise ValueError("ECDSA signature is not a DER SEQUENCE")
    _, i = der_len(der, 1)
    out = b""
    for _ in range(2):
        if der[i] != 0x02:
            raise ValueError("ECDSA signature component is not a DER INTEGER")
        length, i = der_len(der, i + 1)
        value = der[i : i + length].lstrip(b"\x00")
        if len(value) > 32:
            raise ValueError("ECDSA signature component longer than 32 bytes")
        out += value.rjust(32, b"\x00")
        i += length
    return out


def openssl(args, data: bytes = b"") -> bytes:
    done = subprocess.run(
        ["openssl", *args], input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode(errors="replace"))
        raise SystemExit(f"openssl {' '.join(args)} failed")
    return done.stdout


def public_point(key_file: str) -> bytes:
    # SPKI for a P-256 key ends with the 65-byte uncompressed point 0x04 || x || y.
    spki = openssl(["ec", "-in", key_file, "-pubout", "-outform", "DER"])
    point = spki[-65:]
    if point[0] != 0x04:
        raise ValueError("expected an uncompressed P-256 point")
    return point


def jwks(key_file: str, kid: str) -> dict:
    point = public_point(key_file)
    return {
        "keys": [
            {
                "kty": "EC",
                "crv": "P-256",
                "use": "sig",
                "alg": "ES256",
                "kid": kid,
                "x": b64url(point[1:33]),
                "y": b64url(point[33:65]),
            }
        ]
    }


def token(key_file: str, kid: str, claims: dict) -> str:
    header = {"alg": "ES256", "typ": "at+jwt", "kid": kid}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    der = openssl(["dgst", "-sha256", "-sign", key_file], signing_input.encode())
    return signing_input + "." + b64url(der_to_jose(der))


def main(argv):
    if len(argv) >= 4 and argv[1] == "jwks":
        print(json.dumps(jwks(argv[2], argv[3]), indent=2))
    elif len(argv) >= 5 and argv[1] == "token":
        with open(argv[4]) as f:
            claims = json.load(f)
        count = int(argv[5]) if len(argv) > 5 else 1
        for n in range(count):
            these = claims
            if count > 1:
                these = dict(claims, jti=f"{claims.get('jti', 'bench')}-{n}")
            print(token(argv[2], argv[3], these))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
