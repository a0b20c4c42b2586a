// Fused SAN attention on CPU (reference: ops/reference.py):
//
// * `localattn::san_pairwise`: one task = one output row (n, h). The K window rows of x2 / position
//   and the centre row of x1 / position are loaded once with conv_w.0's affine map applied; then for
//   each tap and 16-pixel tile the weight branch (difference → ReLU → 1×1 → ReLU → 1×1) runs on a
//   (channels × 16) scratch held in L1, the logits of the row (K² × C_w × W) stay in a per-thread
//   buffer, are softmaxed over the taps in place and aggregated over the value rows.
// * `localattn::san_patchwise`: one task = a band of output rows of one image, at least kBandPixels
//   pixels (so 7- and 14-pixel rows share 16-pixel tiles). conv_w.5 (C_w·K² × M) runs on 16-pixel
//   tiles of the band's hidden features into a per-thread (C_w·K² × band) buffer, which the same
//   aggregation reads; the (N, C_w·K², H·W) weights are never written.
//
// No K²-sized tensor is ever written to memory. Every output row is written by one task: bit-equal
// for any thread count.
//
// The aggregation and the runtime ISA dispatch of the task loops: cpu/san_window.h.
#include "cpu/san_window.h"

#include <cmath>
#include <string>

namespace localattn::cpu {
namespace {

using namespace san;

struct PairwiseShape : SanWindow {
  int64_t rel, feat, hidden;
};

struct PatchwiseShape : BandedWindow {
  int64_t hidden;
};

// Parameters of the weight branch in the accumulation type (tiny: converted once per call).
template <typename acc_t>
struct PairwiseParams {
  std::vector<acc_t> scale0, shift0, weight2, shift2, weight5, bias5;
};

// exp(x) for x <= 0 (after the softmax max subtraction), vectorisable without -ffast-math (no float
// compare or float->int conversion, which block GCC's vectoriser under -ftrapping-math): x clamped to
// >= -87 by an unsigned compare of its bits, 2^n from the round-to-nearest shift's mantissa bits, e^r
// on |r| <= ln2/2 by a degree-6 polynomial. Relative error < 3e-7; x < -87 gives 1.6e-38.
LOCALATTN_INLINE float exp_nonpositive(float x) {
  x = __builtin_bit_cast(float, std::min(__builtin_bit_cast(uint32_t, x), 0xC2AE0000u));
  const float shifted = x * 1.44269504f + 12582912.0f;  // 1.5·2^23: n = round(x·log2 e) in its bits
  const float n = shifted - 12582912.0f;
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  float p = 1.38888894e-3f;
  p = p * r + 8.33333377e-3f;
  p = p * r + 4.16666679e-2f;
  p = p * r + 1.66666672e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * __builtin_bit_cast(float, (__builtin_bit_cast(int32_t, shifted) - 0x4B400000 + 127) << 23);
}

LOCALATTN_INLINE double exp_nonpositive(double x) { return std::exp(x); }

// out[i·os + 0:L] = act(bias[i] + Σ_c w[i·ws + c]·in[c][0:L]) for i < MB: MB × L accumulators in
// registers.
template <int MB, typename acc_t>
LOCALATTN_INLINE void gemm_tile(acc_t* __restrict out, int64_t os, const acc_t* __restrict w,
                                int64_t ws, const acc_t* __restrict bias,
                                const acc_t* __restrict in, int64_t depth, bool relu) {
  acc_t acc[MB][kLanes];
  for (int i = 0; i < MB; ++i)
    for (int x = 0; x < kLanes; ++x) acc[i][x] = bias[i];
  for (int64_t c = 0; c < depth; ++c) {
    const acc_t* row = in + c * kLanes;
    for (int i = 0; i < MB; ++i) {
      const acc_t wi = w[i * ws + c];
#pragma omp simd
      for (int x = 0; x < kLanes; ++x) acc[i][x] += wi * row[x];
    }
  }
  for (int i = 0; i < MB; ++i)
    for (int x = 0; x < kLanes; ++x)
      out[i * os + x] = relu ? (acc[i][x] > acc_t(0) ? acc[i][x] : acc_t(0)) : acc[i][x];
}

// out (rows × L, row stride os) = act(bias + w (rows × depth) · in (depth × L)), MB rows at a time.
template <int MB, typename acc_t>
LOCALATTN_INLINE void gemm_rows(acc_t* out, int64_t os, const acc_t* w, const acc_t* bias,
                                const acc_t* in, int64_t rows, int64_t depth, bool relu) {
  int64_t i = 0;
  for (; i + MB <= rows; i += MB)
    gemm_tile<MB>(out + i * os, os, w + i * depth, depth, bias + i, in, depth, relu);
  for (; i < rows; ++i) gemm_tile<1>(out + i * os, os, w + i * depth, depth, bias + i, in, depth, relu);
}

// Loads row y of a (·, H, W) plane into dst[0 : W + 2p] with reflected borders, times `scale`,
// plus `shift`; converts to acc_t. Columns beyond are left as they are (slack for the tiles).
template <typename acc_t, typename scalar_t>
LOCALATTN_INLINE void load_affine_row(acc_t* dst, const scalar_t* row, int64_t w, int64_t p,
                                      acc_t scale, acc_t shift) {
  acc_t* mid = dst + p;
  for (int64_t x = 0; x < w; ++x) mid[x] = static_cast<acc_t>(row[x]) * scale + shift;
  for (int64_t v = 0; v < p; ++v) {
    dst[v] = mid[p - v];
    mid[w + v] = mid[w - 2 - v];
  }
}

// The work of one output row (n, h), for one ISA (MB = rows of the register-blocked 1×1 layers).
template <int MB, typename scalar_t, typename acc_t>
LOCALATTN_INLINE void pairwise_row(const PairwiseShape& g, const PairwiseParams<acc_t>& prm,
                                   const scalar_t* x1, const scalar_t* x2, const acc_t* pos,
                                   const scalar_t* value, scalar_t* out, int64_t n, int64_t h,
                                   acc_t* centre, acc_t* window, acc_t* u, acc_t* v, acc_t* z,
                                   acc_t* vrows) {
  const int64_t wpad = g.wpad(), wrow = g.wrow(), plane = g.h * g.w;
  // centre[c][x] = scale0·F_c + shift0, window[c][a][·] = scale0·F(neighbour row a), padded.
  auto load_feature = [&](int64_t c, const auto* src, const auto* nsrc) {
    acc_t* ctr = centre + c * wpad;
    for (int64_t x = 0; x < g.w; ++x)
      ctr[x] = static_cast<acc_t>(src[h * g.w + x]) * prm.scale0[c] + prm.shift0[c];
    std::fill(ctr + g.w, ctr + wpad, acc_t(0));
    for (int64_t a = 0; a < g.k; ++a) {
      const int64_t y = reflect_index(h + a * g.d - g.p, g.h);
      acc_t* dst = window + (c * g.k + a) * wrow;
      load_affine_row(dst, nsrc + y * g.w, g.w, g.p, prm.scale0[c], acc_t(0));
      std::fill(dst + g.w + 2 * g.p, dst + wrow, acc_t(0));
    }
  };
  for (int64_t c = 0; c < g.rel; ++c)
    load_feature(c, x1 + (n * g.rel + c) * plane, x2 + (n * g.rel + c) * plane);
  for (int64_t c = g.rel; c < g.feat; ++c)
    load_feature(c, pos + (c - g.rel) * plane, pos + (c - g.rel) * plane);
  // Logits z[t][j][x] of the whole row, tile by tile.
  for (int64_t x0 = 0; x0 < g.w; x0 += kLanes) {
    for (int64_t t = 0; t < g.kk; ++t) {
      const int64_t a = t / g.k, b = t % g.k;
      for (int64_t c = 0; c < g.feat; ++c) {
        const acc_t* ctr = centre + c * wpad + x0;
        const acc_t* nb = window + (c * g.k + a) * wrow + x0 + b * g.d;
        acc_t* uc = u + c * kLanes;
#pragma omp simd
        for (int x = 0; x < kLanes; ++x) {
          const acc_t diff = ctr[x] - nb[x];
          uc[x] = diff > acc_t(0) ? diff : acc_t(0);
        }
      }
      gemm_rows<MB>(v, kLanes, prm.weight2.data(), prm.shift2.data(), u, g.hidden, g.feat, true);
      gemm_rows<MB>(z + t * g.cw * wpad + x0, wpad, prm.weight5.data(), prm.bias5.data(), v, g.cw,
                    g.hidden, false);
    }
  }
  // Softmax over the taps, in place: z[t][j][x] becomes the attention weight.
  const int64_t tap_stride = g.cw * wpad;
  for (int64_t jx = 0; jx < tap_stride; jx += kLanes) {
    acc_t* base = z + jx;
    acc_t mx[kLanes], sum[kLanes];
    for (int x = 0; x < kLanes; ++x) mx[x] = base[x];
    for (int64_t t = 1; t < g.kk; ++t) {
      const acc_t* zt = base + t * tap_stride;
#pragma omp simd
      for (int x = 0; x < kLanes; ++x) mx[x] = zt[x] > mx[x] ? zt[x] : mx[x];
    }
    for (int x = 0; x < kLanes; ++x) sum[x] = acc_t(0);
    for (int64_t t = 0; t < g.kk; ++t) {
      acc_t* zt = base + t * tap_stride;
#pragma omp simd
      for (int x = 0; x < kLanes; ++x) zt[x] = exp_nonpositive(zt[x] - mx[x]);
#pragma omp simd
      for (int x = 0; x < kLanes; ++x) sum[x] += zt[x];
    }
    for (int x = 0; x < kLanes; ++x) sum[x] = acc_t(1) / sum[x];
    for (int64_t t = 0; t < g.kk; ++t) {
      acc_t* zt = base + t * tap_stride;
#pragma omp simd
      for (int x = 0; x < kLanes; ++x) zt[x] *= sum[x];
    }
  }
  aggregate_rows(g, value, out, n, h, h + 1, z, wpad, tap_stride, 0, vrows);
}

// The task loop of san_pairwise with its per-thread scratch; run<MB> is inlined into each ISA clone.
template <typename scalar_t, typename acc_t>
struct PairwiseTasks {
  const PairwiseShape& g;
  const PairwiseParams<acc_t>& prm;
  const scalar_t *x1, *x2;
  const acc_t* pos;
  const scalar_t* value;
  scalar_t* out;

  int64_t count() const { return g.n * g.h; }

  template <int MB>
  LOCALATTN_INLINE void run(int64_t begin, int64_t end) const {
    const int64_t wpad = g.wpad(), wrow = g.wrow();
    std::vector<acc_t> centre(g.feat * wpad), window(g.feat * g.k * wrow), u(g.feat * kLanes),
        v(g.hidden * kLanes), z(g.kk * g.cw * wpad), vrows(kSharedChannels * (1 + 2 * g.p) * wrow);
    for (int64_t task = begin; task < end; ++task)
      pairwise_row<MB>(g, prm, x1, x2, pos, value, out, task / g.h, task % g.h, centre.data(),
                       window.data(), u.data(), v.data(), z.data(), vrows.data());
  }
};

// One band of output rows [h0, h1) of image n of san_patchwise: logits z[j][(h − h0)·W + x] of the
// band, tile by tile of 16 flattened pixels, then the aggregation reading them.
template <int MB, typename scalar_t, typename acc_t>
LOCALATTN_INLINE void patchwise_band(const PatchwiseShape& g, const acc_t* weight5, const acc_t* bias5,
                                     const scalar_t* hidden, const scalar_t* value, scalar_t* out,
                                     int64_t n, int64_t h0, int64_t h1, acc_t* tile, acc_t* z,
                                     acc_t* vrows) {
  const int64_t plane = g.h * g.w, zs = g.band_stride(), pixels = (h1 - h0) * g.w;
  for (int64_t x0 = 0; x0 < pixels; x0 += kLanes) {
    const int64_t lanes = std::min(kLanes, pixels - x0);
    for (int64_t m = 0; m < g.hidden; ++m) {
      const scalar_t* src = hidden + (n * g.hidden + m) * plane + h0 * g.w + x0;
      acc_t* dst = tile + m * kLanes;
      for (int64_t x = 0; x < lanes; ++x) dst[x] = static_cast<acc_t>(src[x]);
      std::fill(dst + lanes, dst + kLanes, acc_t(0));
    }
    gemm_rows<MB>(z + x0, zs, weight5, bias5, tile, g.cw * g.kk, g.hidden, false);
  }
  aggregate_rows(g, value, out, n, h0, h1, z, g.kk * zs, zs, g.w, vrows);
}

// The task loop of san_patchwise (one task = one band) with its per-thread scratch.
template <typename scalar_t, typename acc_t>
struct PatchwiseTasks {
  const PatchwiseShape& g;
  const acc_t *weight5, *bias5;
  const scalar_t *hidden, *value;
  scalar_t* out;

  int64_t count() const { return g.band_tasks(); }

  template <int MB>
  LOCALATTN_INLINE void run(int64_t begin, int64_t end) const {
    // z: zero-initialised, so the slack lanes the aggregation reads past a band are finite.
    std::vector<acc_t> tile(g.hidden * kLanes), z(g.cw * g.kk * g.band_stride()),
        vrows(kSharedChannels * (g.band + 2 * g.p) * g.wrow());
    for (int64_t task = begin; task < end; ++task) {
      const auto [n, h0, h1] = g.task_rows(task);
      patchwise_band<MB>(g, weight5, bias5, hidden, value, out, n, h0, h1, tile.data(), z.data(), vrows.data());
    }
  }
};

template <typename acc_t>
std::vector<acc_t> param_vector(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
  return std::vector<acc_t>(c.const_data_ptr<acc_t>(), c.const_data_ptr<acc_t>() + c.numel());
}

void check_param(const at::Tensor& t, const char* op, const char* name, at::IntArrayRef expected) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be a floating-point tensor, got ", t.scalar_type());
  check_shape(t, expected, op, name);
}

// C_w divides C, and the map is large enough for one reflection of the padding.
at::Tensor san_pairwise_forward(const at::Tensor& x1, const at::Tensor& x2, const at::Tensor& position,
                                const at::Tensor& value, const at::Tensor& scale0,
                                const at::Tensor& shift0, const at::Tensor& weight2,
                                const at::Tensor& shift2, const at::Tensor& weight5,
                                const at::Tensor& bias5, int64_t kernel_size, int64_t dilation) {
  constexpr const char* op = "localattn::san_pairwise";
  check_window(kernel_size, 1, dilation, op);
  TORCH_CHECK_VALUE(x1.dim() == 4, op, ": x1 must be 4-D (N, R, H, W), got ", x1.sizes());
  TORCH_CHECK_VALUE(value.dim() == 4, op, ": value must be 4-D (N, C, H, W), got ", value.sizes());
  TORCH_CHECK_VALUE(weight2.dim() == 2 && weight5.dim() == 2, op,
                    ": weight2 must be (M, R+2) and weight5 (C_w, M), got ", weight2.sizes(), " and ",
                    weight5.sizes());
  check_cpu_float(x1, op, "x1", x1);
  check_cpu_float(x2, op, "x2", x1);
  check_cpu_float(value, op, "value", x1);
  PairwiseShape g{};
  g.n = x1.size(0), g.rel = x1.size(1), g.h = x1.size(2), g.w = x1.size(3);
  g.feat = g.rel + 2, g.hidden = weight2.size(0), g.cw = weight5.size(0), g.c = value.size(1);
  g.k = kernel_size, g.kk = kernel_size * kernel_size, g.d = dilation;
  g.p = dilation * (kernel_size - 1) / 2;
  check_shape(x2, x1.sizes(), op, "x2");
  check_shape(value, {g.n, g.c, g.h, g.w}, op, "value");
  check_param(position, op, "position", {2, g.h, g.w});
  check_param(scale0, op, "scale0", {g.feat});
  check_param(shift0, op, "shift0", {g.feat});
  check_param(weight2, op, "weight2", {g.hidden, g.feat});
  check_param(shift2, op, "shift2", {g.hidden});
  check_param(weight5, op, "weight5", {g.cw, g.hidden});
  check_param(bias5, op, "bias5", {g.cw});
  check_sharing_and_map(g, op);
  const at::Tensor a1 = x1.contiguous(), a2 = x2.contiguous(), av = value.contiguous();
  at::Tensor out = empty_output(av.sizes(), av.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a1.scalar_type(), "san_pairwise_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const PairwiseParams<acc_t> prm{param_vector<acc_t>(scale0), param_vector<acc_t>(shift0),
                                    param_vector<acc_t>(weight2), param_vector<acc_t>(shift2),
                                    param_vector<acc_t>(weight5), param_vector<acc_t>(bias5)};
    const at::Tensor pos = position.detach().to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    const scalar_t *p1 = a1.const_data_ptr<scalar_t>(), *p2 = a2.const_data_ptr<scalar_t>();
    const acc_t* pp = pos.const_data_ptr<acc_t>();
    const scalar_t* pv = av.const_data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    run_tasks(PairwiseTasks<scalar_t, acc_t>{g, prm, p1, p2, pp, pv, po});
  });
  return out;
}

at::Tensor san_patchwise_forward(const at::Tensor& hidden, const at::Tensor& value, const at::Tensor& weight5,
                                 const at::Tensor& bias5, int64_t kernel_size, int64_t dilation) {
  constexpr const char* op = "localattn::san_patchwise";
  check_window(kernel_size, 1, dilation, op);
  TORCH_CHECK_VALUE(hidden.dim() == 4, op, ": hidden must be 4-D (N, M, H, W), got ", hidden.sizes());
  TORCH_CHECK_VALUE(value.dim() == 4, op, ": value must be 4-D (N, C, H, W), got ", value.sizes());
  check_cpu_float(hidden, op, "hidden", hidden);
  check_cpu_float(value, op, "value", hidden);
  PatchwiseShape g{};
  g.n = hidden.size(0), g.hidden = hidden.size(1), g.h = hidden.size(2), g.w = hidden.size(3);
  g.c = value.size(1), g.k = kernel_size, g.kk = kernel_size * kernel_size, g.d = dilation;
  g.p = dilation * (kernel_size - 1) / 2;
  TORCH_CHECK_VALUE(weight5.dim() == 2 && weight5.size(0) % g.kk == 0, op,
                    ": weight5 must be (C_w*K*K, M) with K*K = ", g.kk, ", got ", weight5.sizes());
  g.cw = weight5.size(0) / g.kk;
  g.set_band();
  check_shape(value, {g.n, g.c, g.h, g.w}, op, "value");
  check_param(weight5, op, "weight5", {g.cw * g.kk, g.hidden});
  check_param(bias5, op, "bias5", {g.cw * g.kk});
  check_sharing_and_map(g, op);
  const at::Tensor ah = hidden.contiguous(), av = value.contiguous();
  at::Tensor out = empty_output(av.sizes(), av.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, ah.scalar_type(), "san_patchwise_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const std::vector<acc_t> w5 = param_vector<acc_t>(weight5), b5 = param_vector<acc_t>(bias5);
    run_tasks(PatchwiseTasks<scalar_t, acc_t>{g, w5.data(), b5.data(), ah.const_data_ptr<scalar_t>(),
                                              av.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>()});
  });
  return out;
}

std::string cpu_isa_name() { return cpu_isa_names()[static_cast<int>(cpu_isa())]; }

// Caps the ISA of the dispatching kernels at `isa` (for tests); returns the ISA now in use.
std::string set_cpu_isa(const std::string& isa) {
  const auto& names = cpu_isa_names();
  const auto it = std::find(names.begin(), names.end(), isa);
  TORCH_CHECK_VALUE(it != names.end(), "localattn::_set_cpu_isa: isa must be one of 'baseline', 'avx2', "
                    "'avx512', got '", isa, "'");
  cpu_isa_cap().store(static_cast<int>(it - names.begin()));
  return cpu_isa_name();
}

}  // namespace
}  // namespace localattn::cpu

TORCH_LIBRARY_FRAGMENT(localattn, m) {
  m.def(
      "san_pairwise(Tensor x1, Tensor x2, Tensor position, Tensor value, Tensor scale0, "
      "Tensor shift0, Tensor weight2, Tensor shift2, Tensor weight5, Tensor bias5, int kernel_size, "
      "int dilation) -> Tensor");
  m.def(
      "san_patchwise(Tensor hidden, Tensor value, Tensor weight5, Tensor bias5, int kernel_size, "
      "int dilation) -> Tensor");
  m.def("_cpu_isa() -> str", &localattn::cpu::cpu_isa_name);
  m.def("_set_cpu_isa(str isa) -> str", &localattn::cpu::set_cpu_isa);
}

TORCH_LIBRARY_IMPL(localattn, CPU, m) {
  m.impl("san_pairwise", &localattn::cpu::san_pairwise_forward);
  m.impl("san_patchwise", &localattn::cpu::san_patchwise_forward);
}
