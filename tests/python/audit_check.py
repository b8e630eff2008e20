"""An auditor's independent check of Keel's ledger: only hashlib and the `cryptography` package.

Verifies a signed checkpoint with the published verifier key, recomputes one event's leaf hash
from its header, salt and payload, and checks inclusion and consistency proofs (RFC 9162).
Between the two checkpoints it sends chat requests with an app key, so the consistency proof
spans two different tree sizes.
Environment: KEEL_ROOT_URL, KEEL_AUDITOR_KEY, KEEL_APP_KEY, KEEL_INTERACTION_ID.
"""
import base64
import hashlib
import json
import os
import struct
import sys
import urllib.request

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ROOT = os.environ["KEEL_ROOT_URL"]
KEY = os.environ["KEEL_AUDITOR_KEY"]


def get(path, method="GET"):
    req = urllib.request.Request(ROOT + path, method=method, headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req) as r:
        return r.read().decode()


def chat(text):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
    headers = {"Authorization": f"Bearer {os.environ['KEEL_APP_KEY']}", "Content-Type": "application/json"}
    req = urllib.request.Request(ROOT + "/v1/chat/completions", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(req) as r:
        r.read()


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def parse_verifier_key(text):
    # The base64 part may itself contain "+": split on the first two only (as Go's note does).
    name, key_id_hex, key_b64 = text.strip().split("+", 2)
    raw = base64.b64decode(key_b64)
    assert raw[0] == 0x01 and len(raw) == 33, "not an Ed25519 verifier key"
    pub = raw[1:]
    key_id = sha256(name.encode(), b"\n", b"\x01", pub)[:4]
    assert key_id.hex() == key_id_hex, "verifier key id does not match its key"
    return name, key_id, Ed25519PublicKey.from_public_bytes(pub)


def verify_checkpoint(note, vkey):
    name, key_id, pub = vkey
    body, sep, sigs = note.partition("\n\n")
    assert sep, "no blank line between body and signatures"
    body = body + "\n"
    for line in sigs.splitlines():
        dash, sig_name, sig_b64 = line.split(" ")
        assert dash == "\u2014"
        blob = base64.b64decode(sig_b64)
        if sig_name == name and blob[:4] == key_id:
            pub.verify(blob[4:], body.encode())  # raises InvalidSignature
            origin, size, root_b64 = body.rstrip("\n").split("\n")
            return origin, int(size), base64.b64decode(root_b64)
    raise AssertionError("no signature by the expected key")


def leaf_hash_of(leaf):
    payload_hash = base64.b64decode(leaf["payload_hash"])
    if leaf["payload"] is not None:
        salt = base64.b64decode(leaf["salt"])
        commitment = sha256(b"keel-payload/v1\n", struct.pack(">Q", len(salt)), salt, leaf["payload"].encode())
        assert commitment == payload_hash, "payload does not match its commitment"
    data = b"keel-event/v1\n" + struct.pack(">QQq", leaf["seq"], leaf["ledger_index"], leaf["at_unix_ms"])
    for s in (leaf["kind"], leaf["actor"], leaf["tenant"]):
        b = s.encode()
        data += struct.pack(">Q", len(b)) + b
    data += payload_hash
    return sha256(b"\x00", data)


def node(l, r):
    return sha256(b"\x01", l, r)


def verify_inclusion(leaf, index, size, proof, root):
    # RFC 9162 section 2.1.3.2
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(size1, size2, root1, root2, proof):
    # RFC 9162 section 2.1.4.2
    if size1 == 0 or size1 > size2:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 & (size1 - 1) == 0:
        proof = [root1] + proof
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    if not proof:
        return False
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2


vkey = parse_verifier_key(get("/api/ledger/pubkey"))
origin1, size1, root1 = verify_checkpoint(get("/api/ledger/checkpoint"), vkey)

interaction = json.loads(get(f"/api/interactions/{os.environ['KEEL_INTERACTION_ID']}"))
index = interaction["ledger_index"]
assert index < size1, "the checkpoint must cover the interaction"
leaf = json.loads(get(f"/api/ledger/leaves/{index}"))
recomputed = leaf_hash_of(leaf)
assert base64.b64encode(recomputed).decode() == leaf["leaf_hash"], "leaf hash differs"
proof = json.loads(get(f"/api/ledger/proof/inclusion?index={index}&size={size1}"))
assert verify_inclusion(recomputed, index, size1, [base64.b64decode(p) for p in proof["proof"]], root1), "inclusion proof fails"

# A later checkpoint, after more events, must be an append-only extension of the first.
for i in range(3):
    chat(f"after the first checkpoint {i}")
origin2, size2, root2 = verify_checkpoint(get("/api/ledger/checkpoint", method="POST"), vkey)
assert origin1 == origin2
assert size2 > size1, f"the second checkpoint must cover the new events ({size1} -> {size2})"
cons = json.loads(get(f"/api/ledger/proof/consistency?from={size1}&to={size2}"))
assert verify_consistency(size1, size2, root1, root2, [base64.b64decode(p) for p in cons["proof"]]), "consistency proof fails"

# A forged checkpoint must fail.
try:
    verify_checkpoint(get("/api/ledger/checkpoint").replace(f"\n{size2}\n", f"\n{size2 + 1}\n"), vkey)
    sys.exit("a forged checkpoint verified")
except (InvalidSignature, AssertionError):
    pass

# A consistency proof against a different (wrong) first root must fail.
assert not verify_consistency(size1, size2, sha256(b"not the root"), root2, [base64.b64decode(p) for p in cons["proof"]]), "a wrong first root verified"

print(f"audit checks passed: leaf {index} in tree {size1}, consistent to {size2}")
