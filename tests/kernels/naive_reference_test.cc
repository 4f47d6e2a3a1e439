// The production cache path (ring slots, keys rotated once on append by
// their slot and queries rotated per lap of the ring, positions from
// CacheGeometry, chunked appends) against a deliberately naive reference: an
// explicit list of every token's key and value, from which each query picks
// its sinks and window by hand and rotates them at their cache positions with
// freshly computed angles. Runs across at least three full wraps.
#include <gtest/gtest.h>

#include <cmath>

#include "absl/strings/str_cat.h"

#include "engine/sequence.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/random_model.h"

namespace sinkserve {
namespace {

using testing::RandomModel;
using testing::RandomTokens;
using testing::TinyConfig;

// y = W x with W (n, k) row-major.
std::vector<float> MatVec(const Weight& weight, const std::vector<float>& x, int n, int k) {
  const std::vector<float> w = weight.ToF32();
  std::vector<float> y(n, 0.0f);
  for (int r = 0; r < n; ++r) {
    double acc = 0.0;
    for (int i = 0; i < k; ++i) acc += double{w[size_t(r) * k + i]} * x[i];
    y[r] = float(acc);
  }
  return y;
}

std::vector<float> Norm(const std::vector<float>& x, const std::vector<float>& w, float eps) {
  double ss = 0.0;
  for (float v : x) ss += double{v} * v;
  const double scale = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = float(w[i] * (scale * x[i]));
  return y;
}

// Rotates head vector `x` (head_dim) by position `pos`, angles from scratch,
// with the config's frequency factors and linear scale when it has them.
std::vector<double> Rotate(const float* x, int head_dim, int pos, const ModelConfig& c) {
  std::vector<double> y(head_dim);
  for (int i = 0; i < head_dim / 2; ++i) {
    double angle = pos * std::pow(double{c.rope_theta}, -2.0 * i / head_dim) * c.rope_freq_scale;
    if (!c.rope_freq_factors.empty()) angle /= c.rope_freq_factors[i];
    y[2 * i] = x[2 * i] * std::cos(angle) - x[2 * i + 1] * std::sin(angle);
    y[2 * i + 1] = x[2 * i] * std::sin(angle) + x[2 * i + 1] * std::cos(angle);
  }
  return y;
}

class NaiveModel {
 public:
  NaiveModel(const Model& m, int sinks, int window) : m_(m), sinks_(sinks), window_(window) {
    keys_.resize(m.config.n_layers);
    values_.resize(m.config.n_layers);
  }

  // Runs one token; returns its logits.
  std::vector<float> Step(int32_t token) {
    const ModelConfig& c = m_.config;
    const int t = int(keys_[0].size());  // absolute index of this token
    // The tokens this query sees, oldest first: sinks, then the window.
    std::vector<int> visible;
    for (int j = 0; j <= t; ++j) {
      if (j < sinks_ || j > t - window_) visible.push_back(j);
    }
    std::vector<float> x(c.dim);
    m_.weights.token_embedding.DequantizeRowTo(token, x.data());
    for (int l = 0; l < c.n_layers; ++l) {
      const LayerWeights& w = m_.weights.layers[l];
      std::vector<float> xb = Norm(x, w.attn_norm, c.norm_eps);
      std::vector<float> q = MatVec(w.wq, xb, c.q_dim(), c.dim);
      keys_[l].push_back(MatVec(w.wk, xb, c.kv_dim(), c.dim));
      values_[l].push_back(MatVec(w.wv, xb, c.kv_dim(), c.dim));
      std::vector<float> att(c.q_dim(), 0.0f);
      const int group = c.n_heads / c.n_kv_heads;
      const int hd = c.head_dim;
      for (int h = 0; h < c.n_heads; ++h) {
        const int kv = h / group;
        // Positions are indices into `visible`: 0.. in age order; the query is last.
        const std::vector<double> qr = Rotate(&q[h * hd], hd, int(visible.size()) - 1, c);
        std::vector<double> scores;
        for (size_t p = 0; p < visible.size(); ++p) {
          const std::vector<double> kr = Rotate(&keys_[l][visible[p]][kv * hd], hd, int(p), c);
          double s = 0.0;
          for (int d = 0; d < hd; ++d) s += qr[d] * kr[d];
          scores.push_back(s / std::sqrt(double(hd)));
        }
        double mx = scores[0];
        for (double s : scores) mx = std::max(mx, s);
        double sum = 0.0;
        for (double& s : scores) sum += (s = std::exp(s - mx));
        for (size_t p = 0; p < visible.size(); ++p) {
          for (int d = 0; d < hd; ++d) att[h * hd + d] += float(scores[p] / sum * values_[l][visible[p]][kv * hd + d]);
        }
      }
      std::vector<float> o = MatVec(w.wo, att, c.dim, c.q_dim());
      for (int i = 0; i < c.dim; ++i) x[i] += o[i];
      xb = Norm(x, w.ffn_norm, c.norm_eps);
      std::vector<float> g = MatVec(w.w1, xb, c.hidden_dim, c.dim);
      std::vector<float> u = MatVec(w.w3, xb, c.hidden_dim, c.dim);
      for (int i = 0; i < c.hidden_dim; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
      std::vector<float> down = MatVec(w.w2, g, c.dim, c.hidden_dim);
      for (int i = 0; i < c.dim; ++i) x[i] += down[i];
    }
    return MatVec(m_.weights.Classifier(), Norm(x, m_.weights.final_norm, c.norm_eps), c.vocab_size, c.dim);
  }

 private:
  const Model& m_;
  int sinks_, window_;
  std::vector<std::vector<std::vector<float>>> keys_, values_;  // (layer, token, kv_dim)
};

struct Case {
  int sinks;
  int window;
  bool scaled_rope = false;  // Llama 3.1 frequency factors and linear scaling
};

class NaiveReferenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(NaiveReferenceTest, MatchesExplicitKeyListAcrossWraps) {
  const Case p = GetParam();
  ModelConfig config = TinyConfig(/*dim=*/32, /*heads=*/4, /*kv=*/2, /*layers=*/2, /*vocab=*/48);
  if (p.scaled_rope) {
    config.rope_freq_scale = 0.25f;
    for (int i = 0; i < config.head_dim / 2; ++i) config.rope_freq_factors.push_back(1.0f + 0.7f * i);
  }
  const Model model = RandomModel(config, /*seed=*/p.sinks * 100 + p.window);
  auto backend = CpuBackend::Create(model, 2);
  ASSERT_TRUE(backend.ok()) << backend.status();

  CacheConfig cache{p.sinks > 0 ? CachePolicy::kSinkWindow : CachePolicy::kWindow, p.sinks, p.window};
  const int32_t chunk = 5;  // prompt chunks of 5 with the ring = window + 4
  auto seq = Sequence::Create(backend->get(), cache, chunk);
  ASSERT_TRUE(seq.ok()) << seq.status();
  NaiveModel naive(model, p.sinks, p.window);

  // Three full wraps of the window, plus slack; a 13-token prompt fed in
  // chunks, then tokens one at a time, then another multi-chunk turn.
  const int total = p.sinks + 3 * p.window + 17;
  const std::vector<int32_t> ids = RandomTokens(total, config.vocab_size, 7);
  std::vector<float> logits;
  int fed = 0;
  double worst = 0.0;
  auto check_rows = [&](int begin, int n, const std::vector<float>& rows) {
    for (int i = 0; i < n; ++i) {
      const std::vector<float> want = naive.Step(ids[begin + i]);
      for (int v = 0; v < config.vocab_size; ++v) {
        const double err = std::abs(double{rows[size_t(i) * config.vocab_size + v]} - want[v]);
        worst = std::max(worst, err / (1.0 + std::abs(want[v])));
      }
    }
  };
  for (int n : {13, 1, 1, 1}) {
    ASSERT_TRUE((*seq)->Feed(absl::MakeConstSpan(ids).subspan(fed, n), &logits).ok());
    check_rows(fed, n, logits);
    fed += n;
  }
  while (fed < total) {
    const int n = std::min(total - fed, (fed / 7) % 2 ? 1 : 9);  // mixes decode and chunks
    ASSERT_TRUE((*seq)->Feed(absl::MakeConstSpan(ids).subspan(fed, n), &logits).ok());
    check_rows(fed, n, logits);
    fed += n;
  }
  EXPECT_LT(worst, 1e-4) << "S=" << p.sinks << " W=" << p.window;
  EXPECT_EQ((*seq)->cache_tokens(), p.sinks + p.window);
  EXPECT_EQ((*seq)->evicted(), total - p.sinks - p.window);
}

INSTANTIATE_TEST_SUITE_P(SinksAndWindows, NaiveReferenceTest,
                         ::testing::Values(Case{0, 1}, Case{0, 7}, Case{0, 64}, Case{1, 1}, Case{1, 7}, Case{1, 64},
                                           Case{4, 1}, Case{4, 7}, Case{4, 64}, Case{0, 7, true}, Case{4, 64, true}),
                         [](const auto& info) {
                           return absl::StrCat("S", info.param.sinks, "W", info.param.window,
                                               info.param.scaled_rope ? "ScaledRope" : "");
                         });

}  // namespace
}  // namespace sinkserve
