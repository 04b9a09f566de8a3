#!/usr/bin/env python3
"""Writes a small seed corpus to fuzz/corpus/<target>/ (git-ignored).

Run from anywhere: python3 fuzz/make_seeds.py
"""
import hashlib
import os
import zlib
import struct

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def frame(b0, payload, key=b"\x37\xfa\x21\x3d"):
    """A masked client frame."""
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n <= 0xFFFF:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close(code, reason=b""):
    return frame(0x88, struct.pack(">H", code) + reason)


FRAMES = [
    frame(0x81, b"Hello"),
    frame(0x82, bytes(range(200))),
    frame(0x01, b"Hel") + frame(0x89, b"ping") + frame(0x80, "lo wörld".encode()),
    frame(0x02, b"a") + frame(0x00, b"b") + frame(0x80, b"c"),
    frame(0x8A, b"pong") + frame(0x81, b"") + close(1000, b"bye"),
    frame(0x81, "✓ ünïcode".encode()) + frame(0x88, b""),
    frame(0x81, b"bad \xed\xa0\x80"),
]


# Compressed messages (RSV1), raw deflate with the sync-flush tail stripped.
def deflated(data):
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


DEFLATED = [
    frame(0xC1, bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])),  # RFC 7692 "Hello"
    frame(0xC1, deflated(b'{"op":"PING","data":{}}' * 20)),
    frame(0x41, deflated("fragmented ✓ text ".encode() * 30)[:20])
    + frame(0x80, deflated("fragmented ✓ text ".encode() * 30)[20:]),
    frame(0xC2, deflated(bytes(100_000))),
]


def recv_ops(data):
    """Connection script: deliver `data` in receive operations (op 0)."""
    out = b""
    for i in range(0, len(data), 255):
        part = data[i : i + 255]
        out += bytes([0, len(part)]) + part
    return out


FLUSH = bytes([5, 255])
SEEDS = {
    "handshake": [
        b"\x00\x00" + REQUEST,
        b"\x06\xc8" + REQUEST,
        b"\xff\xff" + REQUEST,
        b"\x03\x05GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x10\x10" + REQUEST.replace(b"HTTP/1.1", b"HTTP/1.0"),
    ],
    "frame_decoder": [b"\x00\x00" + f for f in FRAMES]
    + [b"\x02\x40" + f for f in FRAMES]
    + [b"\xff\xff" + b"".join(FRAMES)]
    # permessage-deflate on (top bit of the first byte): compressed messages
    + [b"\x80\x06" + f for f in DEFLATED]
    + [b"\x83\x86" + b"".join(DEFLATED)],
    "connection": [recv_ops(f) + FLUSH for f in FRAMES]
    + [
        # send text and binary, then close with a long reason
        bytes([2, 3]) + b"abc" + bytes([0x82, 2]) + b"\x00\x01"
        + bytes([3, 130]) + "é".encode() * 65 + FLUSH
        + recv_ops(frame(0x81, b"late") + close(1000)),
        # keepalive: ping after 30 s, close 1011 after 30 more, drop after 5
        bytes([4, 61, 5, 255, 4, 61, 4, 11]) + FLUSH,
        recv_ops(frame(0x81, b"x" * 300)) + bytes([6, 0]) + FLUSH,
    ],
}

for target, seeds in SEEDS.items():
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    for seed in seeds:
        name = hashlib.sha1(seed).hexdigest()
        with open(os.path.join(folder, name), "wb") as f:
            f.write(seed)
    print(f"{target}: {len(seeds)} seeds in {folder}")
