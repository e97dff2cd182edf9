#!/usr/bin/env python3
"""Recomputes the worked example of docs/token-format.md with Python's standard library.

The example's inputs and every intermediate value are read from the document itself (the
block between the `worked-example` markers), recomputed here from the inputs alone, and
compared. The Rust test `token_format_doc_example` checks the same block against the codec,
so the document, this independent implementation and the code cannot drift apart.

Usage: python3 scripts/token_format.py [docs/token-format.md]
"""

import base64
import hashlib
import hmac
import re
import struct
import sys


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869: extract, then expand."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def read_example(path: str) -> dict:
    text = open(path, encoding="utf-8").read()
    m = re.search(r"<!-- worked-example -->\s*```text\n(.*?)```", text, re.S)
    if not m:
        sys.exit(f"{path}: no ```text block after <!-- worked-example -->")
    fields = {}
    for line in m.group(1).splitlines():
        if ":" in line:
            name, value = line.split(":", 1)
            fields[name.strip()] = value.strip()
    return fields


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "docs/token-format.md"
    doc = read_example(path)
    secret = bytes.fromhex(doc["master secret (hex)"])
    kid = doc["key id"]
    purpose = doc["purpose"].encode()
    issued, expires = int(doc["issued_at"]), int(doc["expires_at"])
    payload = doc["payload (UTF-8)"].encode()

    got = {}
    got["master secret (base64url)"] = b64url(secret)
    k_sign = hkdf_sha256(secret, b"cloakroom/1", b"sign:" + purpose)
    got["K_sign (hex)"] = k_sign.hex()
    envelope = bytes([1]) + struct.pack(">QQ", issued, expires) + payload
    got["envelope (hex)"] = envelope.hex()
    signed_part = f"s1.{kid}.{b64url(envelope)}"
    mac_input = struct.pack(">H", len(purpose)) + purpose + signed_part.encode()
    got["mac_input (hex)"] = mac_input.hex()
    mac = hmac.new(k_sign, mac_input, hashlib.sha256).digest()
    got["mac (hex)"] = mac.hex()
    got["token"] = f"{signed_part}.{b64url(mac)}"
    got["K_seal (hex)"] = hkdf_sha256(secret, b"cloakroom/1", b"seal:" + purpose).hex()
    # The seed's example: HMAC-SHA256 with key SEEKRIT over "Hello World".
    got["seed HMAC (hex)"] = hmac.new(b"SEEKRIT", b"Hello World", hashlib.sha256).hexdigest()

    failures = 0
    for name, value in got.items():
        if doc.get(name) != value:
            failures += 1
            print(f"MISMATCH {name}:\n  document: {doc.get(name)}\n  python:   {value}")
    if failures:
        print(f"token-format: {len(got) - failures} passed, {failures} failed")
        return 1
    print(f"token-format: {len(got)} values of the worked example recomputed with the standard library")
    return 0


if __name__ == "__main__":
    sys.exit(main())
