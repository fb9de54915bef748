#!/usr/bin/env python3
"""Writes the signed DPoP seeds of the `authorization` target (fresh keys each run):
proofs the target's verifier accepts at its fixed clock (fuzz/src/lib.rs NOW), so the
fuzzer starts past the signature. Needs python3-cryptography."""
import base64, hashlib, json, sys
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives import hashes

NOW = 1_800_000_000
HTU = "https://gateway.example/gobank/accounts"
TOKEN = "tok-1"

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def js(o):
    return b64(json.dumps(o, separators=(",", ":")).encode())

claims = {"htm": "GET", "htu": HTU, "iat": NOW, "jti": "j-1",
          "ath": b64(hashlib.sha256(TOKEN.encode()).digest())}

ec_key = ec.generate_private_key(ec.SECP256R1())
n = ec_key.public_key().public_numbers()
jwk = {"kty": "EC", "crv": "P-256", "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}
signing = js({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}) + "." + js(claims)
r, s = decode_dss_signature(ec_key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
es256 = signing + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

ed_key = ed25519.Ed25519PrivateKey.generate()
raw = ed_key.public_key().public_bytes_raw()
jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
signing = js({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}) + "." + js(claims)
eddsa = signing + "." + b64(ed_key.sign(signing.encode()))

out = sys.argv[1] if len(sys.argv) > 1 else "authorization"
for name, proof in [("dpop-es256", es256), ("dpop-eddsa", eddsa)]:
    with open(f"{out}/{name}", "w") as f:
        f.write(f"DPoP {TOKEN}\n\n{proof}")
