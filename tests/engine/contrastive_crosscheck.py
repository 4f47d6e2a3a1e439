#!/usr/bin/env python3
"""sinkserve-generate's contrastive search against an independent numpy one.

The reference shares no code with sinkserve: it reads the model files itself
(llama2.c .bin, GGUF F32), runs a plain float64 forward one token at a time
that keeps every token's un-rotated key and value and, per query, picks the
tokens it sees (all of them, or the sinks and the window) and rotates them at
their cache positions. Contrastive search as transformers defines it
(penalty_alpha, top_k): candidates are the top-k of softmax(logits) (ties: the
lower id), each candidate is run, and the best of
    (1 - alpha) * p(v) - alpha * max_j cos(h_v, h_j)
is kept, h being the last hidden state (after the final norm) and j every
token the candidate's query sees other than itself. The ids must be equal.
Also: penalty_alpha 0 is greedy, and bad settings are one-line errors.

  contrastive_crosscheck.py BUILD_DIR SOURCE_DIR      (exit 77 = skipped)
"""
import os
import struct
import subprocess
import sys

build, source = sys.argv[1], sys.argv[2]
shared = os.environ.get("SINKSERVE_SHARED_DIR") or os.path.join(source, "..", "shared")
stories = os.path.join(shared, "models/stories260K/stories260K.bin")
stories_tok = os.path.join(shared, "models/stories260K/tok512.bin")
synth = os.path.join(shared, "models/synthetic/synth-llama-F32.gguf")
for path in (stories, stories_tok, synth):
    if not os.path.exists(path):
        print(f"SKIP: shared test data missing: {path}")
        sys.exit(77)
try:
    import numpy as np
except ImportError:
    print("SKIP: numpy missing (scripts/setup.sh installs python3-numpy)")
    sys.exit(77)


def load_llama2c(path):
    data = open(path, "rb").read()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("7i", data[:28])
    shared_cls, vocab, hd = vocab > 0, abs(vocab), dim // heads
    w = np.frombuffer(data, dtype=np.float32, offset=28).astype(np.float64)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        out = w[pos:pos + n].reshape(shape)
        pos += n
        return out

    m = dict(dim=dim, layers=layers, heads=heads, kv_heads=kv_heads, vocab=vocab, hd=hd, theta=10000.0, eps=1e-5)
    m["emb"] = take(vocab, dim)
    att_norm, wq, wk, wv = take(layers, dim), take(layers, heads * hd, dim), take(layers, kv_heads * hd, dim), take(layers, kv_heads * hd, dim)
    wo, ffn_norm = take(layers, dim, heads * hd), take(layers, dim)
    w1, w2, w3 = take(layers, hidden, dim), take(layers, dim, hidden), take(layers, hidden, dim)
    m["final_norm"] = take(dim)
    take(seq_len * hd // 2)
    take(seq_len * hd // 2)
    m["cls"] = m["emb"] if shared_cls else take(vocab, dim)
    m["layer"] = [dict(att_norm=att_norm[l], wq=wq[l], wk=wk[l], wv=wv[l], wo=wo[l], ffn_norm=ffn_norm[l],
                       w1=w1[l], w2=w2[l], w3=w3[l]) for l in range(layers)]
    return m


def load_gguf_f32(path):
    """GGUF v3 with F32 tensors only: metadata and every tensor as float64."""
    data = open(path, "rb").read()
    assert data[:4] == b"GGUF", "not a GGUF file"
    at = 8
    n_tensors, n_kv = struct.unpack_from("<QQ", data, at)
    at += 16
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def string():
        nonlocal at
        (n,) = struct.unpack_from("<Q", data, at)
        at += 8 + n
        return data[at - n:at].decode("utf-8", "replace")

    def value(t):
        nonlocal at
        if t == 8:
            return string()
        if t == 9:
            (et, n) = struct.unpack_from("<IQ", data, at)
            at += 12
            return [value(et) for _ in range(n)]
        (v,) = struct.unpack_from(scalar[t], data, at)
        at += struct.calcsize(scalar[t])
        return v

    meta = {}
    for _ in range(n_kv):
        key = string()
        (t,) = struct.unpack_from("<I", data, at)
        at += 4
        meta[key] = value(t)
    infos = []
    for _ in range(n_tensors):
        name = string()
        (n_dims,) = struct.unpack_from("<I", data, at)
        at += 4
        dims = struct.unpack_from(f"<{n_dims}Q", data, at)
        at += 8 * n_dims
        (ttype, offset) = struct.unpack_from("<IQ", data, at)
        at += 12
        assert ttype == 0, f"{name}: only F32 tensors are read here"
        infos.append((name, dims, offset))
    align = meta.get("general.alignment", 32)
    base = (at + align - 1) // align * align
    tensors = {}
    for name, dims, offset in infos:
        count = int(np.prod(dims))
        shape = tuple(reversed(dims))  # ggml lists the fastest dim first
        tensors[name] = np.frombuffer(data, dtype=np.float32, count=count, offset=base + offset).reshape(shape).astype(np.float64)
    arch = meta["general.architecture"]
    dim, heads = meta[f"{arch}.embedding_length"], meta[f"{arch}.attention.head_count"]
    m = dict(dim=dim, layers=meta[f"{arch}.block_count"], heads=heads,
             kv_heads=meta.get(f"{arch}.attention.head_count_kv", heads), hd=dim // heads,
             theta=meta.get(f"{arch}.rope.freq_base", 10000.0), eps=meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5))
    m["emb"] = tensors["token_embd.weight"]
    m["vocab"] = m["emb"].shape[0]
    m["final_norm"] = tensors["output_norm.weight"]
    m["cls"] = tensors.get("output.weight", m["emb"])
    m["layer"] = [dict(att_norm=tensors[f"blk.{l}.attn_norm.weight"], wq=tensors[f"blk.{l}.attn_q.weight"],
                       wk=tensors[f"blk.{l}.attn_k.weight"], wv=tensors[f"blk.{l}.attn_v.weight"],
                       wo=tensors[f"blk.{l}.attn_output.weight"], ffn_norm=tensors[f"blk.{l}.ffn_norm.weight"],
                       w1=tensors[f"blk.{l}.ffn_gate.weight"], w2=tensors[f"blk.{l}.ffn_down.weight"],
                       w3=tensors[f"blk.{l}.ffn_up.weight"]) for l in range(m["layers"])]
    return m


def rms(x, weight, eps):
    return weight * x / np.sqrt(np.mean(x * x) + eps)


def rotate(x, positions, theta):
    """RoPE on interleaved pairs (2i, 2i+1): x (n, heads, hd) at positions (n)."""
    hd = x.shape[-1]
    angle = np.asarray(positions, dtype=np.float64)[:, None] * theta ** (-np.arange(0, hd, 2) / hd)[None, :]
    c, s = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
    return out


class Stream:
    """One sequence; `visible(t)` lists the earlier tokens query t sees, oldest first, ending with t."""

    def __init__(self, m, visible):
        self.m, self.visible = m, visible
        self.keys = [[] for _ in m["layer"]]
        self.values = [[] for _ in m["layer"]]

    def __len__(self):
        return len(self.keys[0])

    def probe(self, token):
        """Logits and last hidden state of `token` as the next token, and its K/V (not appended)."""
        m, t = self.m, len(self)
        seen = self.visible(t)
        x = m["emb"][token].copy()
        group = m["heads"] // m["kv_heads"]
        kv = []
        for l, w in enumerate(m["layer"]):
            xb = rms(x, w["att_norm"], m["eps"])
            q = (w["wq"] @ xb).reshape(1, m["heads"], m["hd"])
            k = (w["wk"] @ xb).reshape(m["kv_heads"], m["hd"])
            v = (w["wv"] @ xb).reshape(m["kv_heads"], m["hd"])
            kv.append((k, v))
            keys = np.stack([self.keys[l][j] if j < t else k for j in seen])
            vals = np.stack([self.values[l][j] if j < t else v for j in seen])
            ks = rotate(keys, range(len(seen)), m["theta"])   # cache positions 0.. in the order seen
            qr = rotate(q, [len(seen) - 1], m["theta"])[0]
            out = np.empty((m["heads"], m["hd"]))
            for h in range(m["heads"]):
                scores = ks[:, h // group, :] @ qr[h] / np.sqrt(m["hd"])
                p = np.exp(scores - scores.max())
                out[h] = (p / p.sum()) @ vals[:, h // group, :]
            x = x + w["wo"] @ out.reshape(-1)
            xb = rms(x, w["ffn_norm"], m["eps"])
            g = w["w1"] @ xb
            x = x + w["w2"] @ (g / (1 + np.exp(-g)) * (w["w3"] @ xb))
        h = rms(x, m["final_norm"], m["eps"])
        return m["cls"] @ h, h, kv

    def commit(self, kv):
        for l, (k, v) in enumerate(kv):
            self.keys[l].append(k)
            self.values[l].append(v)


def contrastive(m, prompt, steps, alpha, k, sinks=None, window=None):
    if window is None:
        visible = lambda t: list(range(t + 1))
    else:
        visible = lambda t: [j for j in range(t + 1) if j < sinks or j > t - window]
    s = Stream(m, visible)
    hidden = []
    for tok in prompt:
        logits, h, kv = s.probe(tok)
        s.commit(kv)
        hidden.append(h / np.linalg.norm(h))
    out = []
    for _ in range(steps):
        z = np.exp(logits - logits.max())
        p = z / z.sum()
        candidates = sorted(range(len(p)), key=lambda i: (-logits[i], i))[:k]
        t = len(s)
        context = np.stack([hidden[j] for j in visible(t) if j != t])
        best = None
        for c in candidates:
            lc, hc, kvc = s.probe(c)
            penalty = (context @ (hc / np.linalg.norm(hc))).max()
            score = (1 - alpha) * p[c] - alpha * penalty
            if best is None or score > best[0]:
                best = (score, c, lc, hc, kvc)
        _, c, logits, h, kv = best
        s.commit(kv)
        hidden.append(h / np.linalg.norm(h))
        out.append(c)
    return out


def generate(model_args, prompt, extra):
    r = subprocess.run([os.path.join(build, "sinkserve-generate")] + model_args +
                       ["--prompt", prompt, "--backend", "cpu", "--ignore-eos", "--print-ids", "--quiet"] + extra,
                       capture_output=True, text=True)
    return r


def prompt_ids(model_args, prompt):
    r = subprocess.run([os.path.join(build, "sinkserve-tokenize")] + model_args, input=prompt.encode(),
                       capture_output=True, check=True)
    return [int(x) for x in r.stdout.split()]


models = {
    "stories260K": (load_llama2c(stories), ["--model", stories, "--tokenizer", stories_tok]),
    "synth-llama-F32": (load_gguf_f32(synth), ["--model", synth]),
}
prompt = "Once upon a time, there was a little girl named Lily."
steps = 200
failed = 0
cases = [("stories260K", 4, None), ("stories260K", 5, None), ("synth-llama-F32", 4, None), ("synth-llama-F32", 5, None),
         ("stories260K", 5, (4, 32)), ("synth-llama-F32", 4, (2, 40))]
for name, k, sink_window in cases:
    m, args = models[name]
    ids = prompt_ids(args, prompt)
    policy = ["--policy", "dense"] if sink_window is None else \
        ["--policy", "sink_window", "--sinks", str(sink_window[0]), "--window", str(sink_window[1]), "--chunk", "8"]
    r = generate(args, prompt, ["--penalty-alpha", "0.6", "--top-k", str(k), "--max-new-tokens", str(steps)] + policy)
    if r.returncode != 0:
        print(f"FAIL {name} k={k} {policy}: {r.stderr.strip()}")
        failed += 1
        continue
    ours = [int(x) for x in r.stdout.split()]
    ref = contrastive(m, ids, steps, 0.6, k, *(sink_window or (None, None)))
    same = ours == ref
    first = next((i for i, (a, b) in enumerate(zip(ours, ref)) if a != b), None)
    print(f"{'ok  ' if same else 'FAIL'} {name} k={k} {' '.join(policy)}: {len(ours)} ids"
          + ("" if same else f", first difference at {first}: {ours[first:first + 5]} vs {ref[first:first + 5]}"))
    failed += not same

# penalty_alpha 0 is greedy.
m, args = models["stories260K"]
greedy = generate(args, prompt, ["--temperature", "0", "--max-new-tokens", "100"]).stdout.split()
off = generate(args, prompt, ["--penalty-alpha", "0", "--top-k", "5", "--temperature", "0", "--max-new-tokens", "100"]).stdout.split()
print(f"{'ok  ' if greedy == off and len(greedy) == 100 else 'FAIL'} penalty_alpha 0 equals greedy")
failed += not (greedy == off and len(greedy) == 100)

# Bad settings: one line on stderr, a non-zero exit.
for extra, expect in [(["--penalty-alpha", "1.5", "--top-k", "4"], "in [0, 1]"),
                      (["--penalty-alpha", "-0.1", "--top-k", "4"], "in [0, 1]"),
                      (["--penalty-alpha", "0.6", "--top-k", "0"], "needs --top-k in 1..64"),
                      (["--penalty-alpha", "0.6", "--top-k", "65"], "needs --top-k in 1..64"),
                      (["--penalty-alpha", "0.6", "--top-k", "4", "--temperature", "0.7"], "takes no --temperature"),
                      (["--penalty-alpha", "0.6", "--top-k", "4", "--policy", "recompute", "--window", "16"], "recompute")]:
    r = generate(args, prompt, extra + ["--max-new-tokens", "5"])
    ok = r.returncode != 0 and expect in r.stderr and r.stderr.count("\n") == 1
    print(f"{'ok  ' if ok else 'FAIL'} {' '.join(extra)}: {r.stderr.strip()}")
    failed += not ok
sys.exit(1 if failed else 0)
