#!/usr/bin/env python3
"""An independent reader of eStargz blobs (Python's gzip, tarfile, hashlib, zlib): checks
one layer blob against containerd/stargz-snapshotter docs/estargz.md and prints its TOC's
entry names (one a line) for the test to compare.

usage: check.py BLOB DIFF_ID TOC_DIGEST
"""
import gzip, hashlib, io, json, sys, tarfile, zlib

blob_path, diff_id, toc_digest = sys.argv[1:4]
blob = open(blob_path, "rb").read()

# The whole blob is one (multi-member) gzip stream of a valid tar; its sha256 is the diff id.
raw = gzip.decompress(blob)
assert "sha256:" + hashlib.sha256(raw).hexdigest() == diff_id, "diff id"
names = [m.name for m in tarfile.open(fileobj=io.BytesIO(raw), mode="r:")]
assert names[-1] == "stargz.index.json", names[-1:]

# The footer: 51 bytes, a gzip member with extra field SG = %016x offset + STARGZ.
footer = blob[-51:]
assert footer[:4] == b"\x1f\x8b\x08\x04" and footer[12:14] == b"SG", footer[:16]
assert footer[32:38] == b"STARGZ"
toc_off = int(footer[16:32], 16)
assert gzip.decompress(footer) == b""

# The TOC member alone holds a tar with stargz.index.json.
member = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(blob[toc_off:-51])
t = tarfile.open(fileobj=io.BytesIO(member), mode="r:")
data = t.extractfile("stargz.index.json").read()
assert "sha256:" + hashlib.sha256(data).hexdigest() == toc_digest, "toc digest"
toc = json.loads(data)
assert toc["version"] == 1

# Every chunk's member decompresses, alone, to bytes whose sha256 is its chunkDigest; a
# file's chunks cover it and its digest is the whole's.
sizes = {}
whole = {}
for e in toc["entries"]:
    if e["type"] == "reg" and e.get("size", 0) > 0 or e["type"] == "chunk":
        if e["type"] == "reg":
            sizes[e["name"]] = (e["size"], e["digest"])
            whole[e["name"]] = b""
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(blob[e["offset"]:])
        size = e.get("chunkSize") or sizes[e["name"]][0] - e.get("chunkOffset", 0)
        inner = e.get("innerOffset", 0)
        chunk = out[inner:inner + size]
        assert len(chunk) == size, (e["name"], len(chunk), size)
        assert "sha256:" + hashlib.sha256(chunk).hexdigest() == e["chunkDigest"], e["name"]
        assert len(whole[e["name"]]) == e.get("chunkOffset", 0), e["name"]
        whole[e["name"]] += chunk
for n, (size, digest) in sizes.items():
    assert len(whole[n]) == size and "sha256:" + hashlib.sha256(whole[n]).hexdigest() == digest, n
for e in toc["entries"]:
    print(e["type"], e["name"], e.get("chunkOffset", 0))
