#!/usr/bin/python3
"""Writes the request_fuzz seeds: Chat streams as the fuzzer reads them (each
request a 2-byte little-endian length, then its bytes).

usage: /usr/bin/python3 fuzz/make_request_seeds.py [OUT_DIR]   (default fuzz/seeds/request)
Needs protoc and Debian's python3-protobuf.
"""
import os
import struct
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "server"))
from grpc_harness import load_messages  # noqa: E402


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "fuzz", "seeds", "request")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        msgs, _ = load_messages(os.path.join(root, "proto"), work)
    Req = msgs["ChatRequest"]

    def open_(session_id="", **cache):
        r = Req()
        r.open.session_id = session_id
        r.open.system_prompt = "Be brief."
        for k, v in cache.items():
            setattr(r.open.cache, k, v)
        return r

    def turn(text, max_new=6, **extra):
        r = Req()
        r.turn.text = text
        r.turn.max_new_tokens = max_new
        for k, v in extra.items():
            if k == "stop":
                r.turn.stop.extend(v)
            else:
                setattr(r.turn, k, v)
        return r

    def contrastive_turn(text, max_new, alpha, top_k):
        r = turn(text, max_new, ignore_eos=True)
        r.turn.sampling.penalty_alpha = alpha
        r.turn.sampling.top_k = top_k
        return r

    def cancel():
        r = Req()
        r.cancel.SetInParent()
        return r

    seeds = {
        "two_turns": [open_(), turn("Hello"), turn("And then?", raw=True)],
        "cancel": [open_(), turn("Tell me a story", 16, ignore_eos=True), cancel()],
        "stops": [open_(), turn("Hi", 8, stop=["a", "the", "\u00e9"], min_new_tokens=2)],
        "cache": [open_(sink_tokens=2, window_tokens=32, policy=2), turn("x" * 200)],
        "dense": [open_(policy=3), turn("y" * 300, 16)],
        "resume_unknown": [open_("00112233445566778899aabbccddeeff"), turn("hi")],
        "turn_first": [turn("no open"), open_()],
        "empty": [Req()],
        "contrastive": [open_(sink_tokens=2, window_tokens=16, policy=2), turn("Once", 24, ignore_eos=True),
                        contrastive_turn("upon", 40, 0.6, 4), contrastive_turn("x", 4, 1.5, 4)],
    }
    for name, requests in seeds.items():
        data = b"".join(struct.pack("<H", len(b)) + b for b in (r.SerializeToString() for r in requests))
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds in {out}")


if __name__ == "__main__":
    main()
