// llama2.c checkpoints (karpathy/llama2.c run.c, "legacy v0" export).
//
// Layout, all little-endian:
//   header: 7 x int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//           vocab_size, seq_len); vocab_size < 0 means an unshared classifier
//   fp32 weights, each group for all layers at once:
//     token_embedding (vocab, dim)
//     rms_att (n_layers, dim)
//     wq (n_layers, n_heads*head_size, dim)   row-major (out, in): run.c's
//     wk (n_layers, kv_dim, dim)              matmul(xout, x, W, n, d) reads
//     wv (n_layers, kv_dim, dim)              W as (d outputs, n inputs)
//     wo (n_layers, dim, n_heads*head_size)
//     rms_ffn (n_layers, dim)
//     w1 (n_layers, hidden, dim)  w2 (n_layers, dim, hidden)  w3 (n_layers, hidden, dim)
//     rms_final (dim)
//     freq_cis_real, freq_cis_imag (seq_len * head_size / 2 each; skipped)
//     wcls (vocab, dim) when unshared
// The file size must match the header exactly.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "engine/model/model.h"

namespace sinkserve {

// Parses a whole checkpoint held in `bytes`. The Model has no vocab (llama2.c
// keeps it in a separate tokenizer.bin).
absl::StatusOr<Model> ParseLlama2cCheckpoint(std::string_view bytes);

}  // namespace sinkserve
