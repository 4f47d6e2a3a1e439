#!/usr/bin/env python3
"""Writes small synthetic seed inputs for the parser fuzzers.

usage: fuzz/make_seeds.py OUT_DIR
Creates OUT_DIR/gguf/*.gguf (tiny llama models in F32, in mixed
F16/BF16/Q8_0 and in the block types Q4_0..Q6_K, a qwen2 model with
attention biases, a metadata-only file with nested arrays) and
OUT_DIR/llama2c/*.bin (tiny checkpoints, shared and unshared classifier).
Small seeds let libFuzzer mutate headers quickly; the real files under
../shared are added as seeds by the caller.
"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def gstr(s):
    b = s.encode()
    return struct.pack('<Q', len(b)) + b


def kv(key, vtype, payload):
    return gstr(key) + struct.pack('<I', vtype) + payload


def arr(elem, items):
    return struct.pack('<IQ', elem, len(items)) + b''.join(items)


def gguf(kvs, tensors, align=32):
    """tensors: list of (name, ne fastest-first, ggml type, data bytes)."""
    out = b'GGUF' + struct.pack('<IQQ', 3, len(tensors), len(kvs)) + b''.join(kvs)
    off, offs = 0, []
    for name, ne, t, data in tensors:
        out += gstr(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', d) for d in ne)
        out += struct.pack('<IQ', t, off)
        offs.append(off)
        off = (off + len(data) + align - 1) // align * align
    if not tensors:
        return out
    out += b'\0' * (-len(out) % align)
    start = len(out)
    for (name, ne, t, data), o in zip(tensors, offs):
        out += b'\0' * (start + o - len(out)) + data
    return out


def tensor_bytes(t, n, seed):
    vals = [((i * 7 + seed * 13) % 17 - 8) / 8.0 for i in range(n)]
    if t == 0:
        return struct.pack('<%df' % n, *vals)
    if t == 1:
        return struct.pack('<%de' % n, *vals)
    if t == 30:
        return b''.join(struct.pack('<f', v)[2:] for v in vals)
    if t == 8:
        out = b''
        for b in range(n // 32):
            out += struct.pack('<e', 1.0 / 64) + bytes((j * 5 + b) % 256 for j in range(32))
        return out
    if t in QUANT:
        # Block types: fp16 scales where the layout keeps them, patterned
        # bytes for the quants (engine/model/quant.h has the layouts).
        block, size, halves = QUANT[t]
        out = b''
        for b in range(n // block):
            raw = bytearray((j * 7 + b * 3 + seed) % 256 for j in range(size))
            for off in halves:
                raw[off:off + 2] = struct.pack('<e', 1.0 / 256)
            out += bytes(raw)
        return out
    raise ValueError(t)


# ggml type -> (values per block, bytes per block, offsets of fp16 scales)
QUANT = {2: (32, 18, [0]), 3: (32, 20, [0, 2]), 6: (32, 22, [0]), 7: (32, 24, [0, 2]),
         12: (256, 144, [0, 2]), 13: (256, 176, [0, 2]), 14: (256, 210, [208])}


def llama(dim, hidden, layers, heads, kv_heads, vocab, types, arch='llama'):
    hd = dim // heads
    kvs = [
        kv('general.architecture', STR, gstr(arch)),
        kv('general.name', STR, gstr('seed')),
        kv(arch + '.embedding_length', U32, struct.pack('<I', dim)),
        kv(arch + '.feed_forward_length', U32, struct.pack('<I', hidden)),
        kv(arch + '.block_count', U32, struct.pack('<I', layers)),
        kv(arch + '.attention.head_count', U32, struct.pack('<I', heads)),
        kv(arch + '.attention.head_count_kv', U32, struct.pack('<I', kv_heads)),
        kv(arch + '.context_length', U32, struct.pack('<I', 32)),
        kv(arch + '.rope.dimension_count', U32, struct.pack('<I', hd)),
        kv(arch + '.rope.freq_base', F32, struct.pack('<f', 10000.0)),
        kv(arch + '.attention.layer_norm_rms_epsilon', F32, struct.pack('<f', 1e-5)),
        kv('tokenizer.ggml.model', STR, gstr('llama')),
        kv('tokenizer.ggml.tokens', ARR, arr(STR, [gstr('t%d' % i) for i in range(vocab)])),
        kv('tokenizer.ggml.scores', ARR, arr(F32, [struct.pack('<f', -i) for i in range(vocab)])),
        kv('tokenizer.ggml.token_type', ARR, arr(I32, [struct.pack('<i', 1)] * vocab)),
        kv('tokenizer.ggml.bos_token_id', U32, struct.pack('<I', 1)),
        kv('tokenizer.ggml.eos_token_id', U32, struct.pack('<I', 2)),
        kv('tokenizer.ggml.add_bos_token', BOOL, b'\1'),
        kv('tokenizer.chat_template', STR, gstr('{{ x }}')),
    ]
    shapes = [('token_embd.weight', [dim, vocab])]
    for l in range(layers):
        p = 'blk.%d.' % l
        shapes += [(p + 'attn_norm.weight', [dim]), (p + 'attn_q.weight', [dim, dim]),
                   (p + 'attn_k.weight', [dim, kv_heads * hd]),
                   (p + 'attn_v.weight', [dim, kv_heads * hd]),
                   (p + 'attn_output.weight', [dim, dim]), (p + 'ffn_norm.weight', [dim]),
                   (p + 'ffn_gate.weight', [dim, hidden]), (p + 'ffn_down.weight', [hidden, dim]),
                   (p + 'ffn_up.weight', [dim, hidden])]
        if arch == 'qwen2':
            shapes += [(p + 'attn_q.bias', [dim]), (p + 'attn_k.bias', [kv_heads * hd]),
                       (p + 'attn_v.bias', [kv_heads * hd])]
    shapes += [('output_norm.weight', [dim]), ('output.weight', [dim, vocab])]
    tensors = []
    for i, (name, ne) in enumerate(shapes):
        n = 1
        for d in ne:
            n *= d
        t = 0 if len(ne) == 1 else types[i % len(types)]
        tensors.append((name, ne, t, tensor_bytes(t, n, i)))
    return gguf(kvs, tensors)


def llama2c(shared):
    dim, hidden, layers, heads, kv_heads, vocab, seq = 8, 16, 2, 2, 1, 6, 4
    hd = dim // heads
    n = (vocab * dim + layers * (2 * dim + 2 * dim * dim + 2 * dim * kv_heads * hd + 3 * dim * hidden)
         + dim + seq * hd + (0 if shared else vocab * dim))
    hdr = struct.pack('<7i', dim, hidden, layers, heads, kv_heads, vocab if shared else -vocab, seq)
    return hdr + struct.pack('<%df' % n, *[(i % 11) / 11.0 for i in range(n)])


def main():
    out = sys.argv[1]
    os.makedirs(os.path.join(out, 'gguf'), exist_ok=True)
    os.makedirs(os.path.join(out, 'llama2c'), exist_ok=True)
    seeds = {
        'gguf/tiny_f32.gguf': llama(4, 6, 2, 2, 1, 5, [0]),
        'gguf/tiny_mixed.gguf': llama(32, 32, 1, 4, 2, 8, [1, 30, 8, 0]),
        'gguf/tiny_quant.gguf': llama(256, 256, 1, 2, 1, 4, [12, 13, 14, 2, 3, 6, 7, 8]),
        'gguf/tiny_qwen2.gguf': llama(32, 32, 1, 4, 2, 8, [8, 0], arch='qwen2'),
        'gguf/nested.gguf': gguf([
            kv('general.alignment', U32, struct.pack('<I', 64)),
            kv('n', ARR, arr(ARR, [arr(U8, [b'\1', b'\2']), arr(STR, [gstr('x')])])),
            kv('i64', I64, struct.pack('<q', -5)), kv('f64', F64, struct.pack('<d', 0.5)),
        ], [('w', [32, 2], 8, tensor_bytes(8, 64, 0))], align=64),
        'llama2c/tiny_shared.bin': llama2c(True),
        'llama2c/tiny_unshared.bin': llama2c(False),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), 'wb') as f:
            f.write(data)


if __name__ == '__main__':
    main()
