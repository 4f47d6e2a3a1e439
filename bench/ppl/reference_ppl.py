#!/usr/bin/env python3
"""An independent StreamingLLM perplexity, for checking sinkserve-perplexity.

Written from the paper and llama2.c's file format, sharing no code with
sinkserve: numpy, float64, one token at a time, keeping an explicit list of
every token's un-rotated key and value and, for each query, picking the
sinks and the window by hand and rotating them at their cache positions.

  reference_ppl.py --model stories260K.bin --ids-file ids.txt \
      --policy sink_window|window|dense|recompute --sinks S --window W [--max-tokens N]

Prints `ppl=<value> tokens=<count>` like sinkserve-perplexity.
"""
import argparse
import struct
import sys

import numpy as np


def load_llama2c(path):
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("7i", data[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // heads
    w = np.frombuffer(data, dtype=np.float32, offset=28).astype(np.float64)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        out = w[pos:pos + n].reshape(shape)
        pos += n
        return out

    m = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, vocab=vocab, hd=hd)
    m["emb"] = take(vocab, dim)
    m["att_norm"] = take(layers, dim)
    m["wq"] = take(layers, heads * hd, dim)
    m["wk"] = take(layers, kv_heads * hd, dim)
    m["wv"] = take(layers, kv_heads * hd, dim)
    m["wo"] = take(layers, dim, heads * hd)
    m["ffn_norm"] = take(layers, dim)
    m["w1"] = take(layers, hidden, dim)
    m["w2"] = take(layers, dim, hidden)
    m["w3"] = take(layers, hidden, dim)
    m["final_norm"] = take(dim)
    take(seq_len * hd // 2)  # freq_cis_real
    take(seq_len * hd // 2)  # freq_cis_imag
    m["cls"] = m["emb"] if shared else take(vocab, dim)
    m["context"] = seq_len
    return m


def rms(x, weight, eps=1e-5):
    return weight * x / np.sqrt(np.mean(x * x) + eps)


def rotate(x, pos, theta=10000.0):
    """RoPE on interleaved pairs (2i, 2i+1) of one head vector at `pos`."""
    hd = x.shape[-1]
    freq = theta ** (-np.arange(0, hd, 2) / hd)
    angle = pos * freq
    c, s = np.cos(angle), np.sin(angle)
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
    return out


class Stream:
    """One sequence; `visible(t)` says which earlier tokens query t sees."""

    def __init__(self, m, visible):
        self.m, self.visible = m, visible
        self.keys = [[] for _ in range(m["layers"])]    # per layer: un-rotated (kv_heads, hd) per token
        self.values = [[] for _ in range(m["layers"])]

    def step(self, token):
        m = self.m
        t = len(self.keys[0])
        seen = self.visible(t)  # absolute indices, oldest first; ends with t
        x = m["emb"][token].copy()
        group = m["heads"] // m["kv_heads"]
        for l in range(m["layers"]):
            xb = rms(x, m["att_norm"][l])
            q = (m["wq"][l] @ xb).reshape(m["heads"], m["hd"])
            self.keys[l].append((m["wk"][l] @ xb).reshape(m["kv_heads"], m["hd"]))
            self.values[l].append((m["wv"][l] @ xb).reshape(m["kv_heads"], m["hd"]))
            # Cache positions: 0.. in the order the query sees them.
            ks = np.stack([rotate(self.keys[l][j], p) for p, j in enumerate(seen)])   # (n, kv, hd)
            vs = np.stack([self.values[l][j] for j in seen])
            qr = rotate(q, len(seen) - 1)
            out = np.empty_like(q)
            for h in range(m["heads"]):
                scores = ks[:, h // group, :] @ qr[h] / np.sqrt(m["hd"])
                p = np.exp(scores - scores.max())
                out[h] = (p / p.sum()) @ vs[:, h // group, :]
            x = x + m["wo"][l] @ out.reshape(-1)
            xb = rms(x, m["ffn_norm"][l])
            g = m["w1"][l] @ xb
            x = x + m["w2"][l] @ (g / (1 + np.exp(-g)) * (m["w3"][l] @ xb))
        return m["cls"] @ rms(x, m["final_norm"])


def nll(logits, target):
    z = logits - logits.max()
    return np.log(np.exp(z).sum()) - z[target]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids-file", required=True)
    ap.add_argument("--policy", required=True, choices=["sink_window", "window", "dense", "recompute"])
    ap.add_argument("--sinks", type=int, default=0)
    ap.add_argument("--window", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=0)
    a = ap.parse_args()
    m = load_llama2c(a.model)
    ids = [int(x) for x in open(a.ids_file).read().split()]
    if a.max_tokens:
        ids = ids[:a.max_tokens]
    S = a.sinks if a.policy == "sink_window" else 0
    W = m["context"] if a.policy == "dense" else a.window
    total = 0.0
    if a.policy == "recompute":
        for i in range(len(ids) - 1):
            s = Stream(m, lambda t: list(range(t + 1)))
            for tok in ids[max(0, i - W + 1):i + 1]:
                logits = s.step(tok)
            total += nll(logits, ids[i + 1])
    else:
        s = Stream(m, lambda t: [j for j in range(t + 1) if j < S or j > t - W])
        for i in range(len(ids) - 1):
            if a.policy == "dense" and i >= W:
                sys.exit(f"dense cache is full at token {i} (context {W})")
            total += nll(s.step(ids[i]), ids[i + 1])
    print(f"ppl={np.exp(total / (len(ids) - 1)):.6f} tokens={len(ids)}")


if __name__ == "__main__":
    main()
