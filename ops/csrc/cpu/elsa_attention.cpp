// Fused ELSA attention `localattn::elsa_attention` (schema below; Python reference and the full
// statement: ops/reference.py `elsa_attention`). On the channels-last tensors the ELSA layer has:
//
//   logits (B, Ho, Wo, G·K²)   pre-softmax, channel g·K² + k       A = softmax over k (fp32)
//   values (B, H, W, G·C)      X, channel g·C + c                   Ho = H // s, Wo = W // s
//   ghost_mul, ghost_add (G·C, K, K) or None: M (ones), D (zeros), shared by the batch
//   out[b,i,j,g·C+c] = Σ_k (M[g·C+c,k]·A[b,i,j,g,k] + D[g·C+c,k]) · X[b, i·s+(ky−r)d, j·s+(kx−r)d, g·C+c]
//
// Every kernel is vectorised over a block of L channels of one head (L = 64 bytes of the
// accumulation type: 16 floats; GCC vector extensions, lowered to SSE / AVX2 / AVX-512 by the
// target clones of common.h), so the work per multiply-add does not depend on the map size.
// Zero borders come from zero-padded row buffers of the block (which also convert bf16/fp16 to
// float once). Softmax is fused: computed per output row into a small buffer.
//   forward, task (b, output row i): per head and channel block, the K padded input rows, then
//     groups of P pixels accumulate all K² taps in registers.
//   backward pass 1, task (b, i): softmax recomputed (and kept for pass 2), grad of A per pixel and
//     tap (a dot product over the head's channels), its softmax backward -> grad_logits; per-task
//     partial ghost gradients, then reduced over tasks in a fixed order.
//   backward pass 2, task (b, input row y): grad of values as a gather over the output rows and
//     columns whose window covers the pixel (stride handled by an input-resolution, zero-filled copy
//     of grad_out and A).
// Each output element is written by one task and every sum has a fixed order: results are bit-equal
// for any thread count. All indexing is int64_t.
#include "cpu/common.h"

#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <cmath>
#include <cstring>
#include <limits>

// The vector helpers below are always inlined into their ISA variant; no vector crosses a call.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace localattn::cpu {
namespace {

constexpr const char* kOp = "localattn::elsa_attention";

// A channel block is 64 bytes of the accumulation type (L = 16 floats / 8 doubles), the same for
// every ISA (so scratch layouts are too); a kernel compiled for vectors of VW bytes handles it as
// NV = 64 / VW native vectors of VL lanes (GCC vector extensions: one zmm, two ymm or four xmm).
template <typename T>
inline constexpr int64_t kBlock = 64 / sizeof(T);

template <typename T, int VW>
struct Native {
  typedef T V __attribute__((vector_size(VW)));
  typedef int32_t I __attribute__((vector_size(VW / sizeof(T) * 4)));
  static constexpr int VL = VW / sizeof(T), NV = 64 / VW;
};

template <typename V, typename T>
LOCALATTN_INLINE V vload(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
LOCALATTN_INLINE void vstore(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

template <typename T, typename V>
LOCALATTN_INLINE T hsum(V v) {
  T s = 0;
#pragma GCC unroll 16
  for (int l = 0; l < int(sizeof(V) / sizeof(T)); ++l) s += v[l];
  return s;
}

// e^x on a vector of floats (Cephes expf: range reduction by ln 2 in two parts, degree-5
// polynomial, exponent by bit construction; ~1 ulp); x < -87.3 (and -inf) -> 0, NaN -> NaN.
template <typename V, typename I>
LOCALATTN_INLINE V vexp(V x) {
  const V lo = V{} - 87.33654f, hi = V{} + 88.72283f;
  V xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const V n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  V r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = V{} + 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  const V res = p * reinterpret_cast<const V&>(bits);
  return x < lo ? V{} : res;
}

struct Geom {
  int64_t b, h, w, cv, heads, cg, k, kk, kkp, d, s, r, ho, wo, pad, wp, nblk, cvp;
  int64_t xs[3], ls[3];  // element strides (batch, row, column) of values and logits; channels: 1
};

void check_float(const at::Tensor& t, const char* name, const at::Tensor& like) {
  check_cpu_float(t, kOp, name, like);
}

Geom make_geom(const at::Tensor& logits, const at::Tensor& values,
               const std::optional<at::Tensor>& mul, const std::optional<at::Tensor>& add,
               int64_t k, int64_t d, int64_t s, int64_t lanes) {
  check_window(k, s, d, kOp);
  TORCH_CHECK_VALUE(values.dim() == 4, kOp, ": values must be 4-D (B, H, W, G*C), got ",
                    values.sizes());
  TORCH_CHECK_VALUE(logits.dim() == 4, kOp, ": logits must be 4-D (B, H//stride, W//stride, G*K*K), got ",
                    logits.sizes());
  check_float(values, "values", values);
  check_float(logits, "logits", values);
  Geom g{};
  g.b = values.size(0), g.h = values.size(1), g.w = values.size(2), g.cv = values.size(3);
  g.k = k, g.kk = k * k, g.kkp = (g.kk + 15) / 16 * 16, g.d = d, g.s = s, g.r = (k - 1) / 2;
  g.ho = g.h / s, g.wo = g.w / s;
  const int64_t gk = logits.size(3);
  TORCH_CHECK_VALUE(gk > 0 && gk % g.kk == 0, kOp, ": logits must have G*K*K channels (a multiple of K*K = ",
                    g.kk, "), got ", gk);
  g.heads = gk / g.kk;
  TORCH_CHECK_VALUE(g.cv % g.heads == 0, kOp, ": values channels ", g.cv,
                    " must be divisible by the number of heads G = ", g.heads, " (logits channels / K*K)");
  check_shape(logits, {g.b, g.ho, g.wo, gk}, kOp, "logits");
  for (const auto* ghost : {&mul, &add}) {
    if (ghost->has_value()) {
      const char* name = ghost == &mul ? "ghost_mul" : "ghost_add";
      check_float(**ghost, name, values);
      check_shape(**ghost, {g.cv, k, k}, kOp, name);
    }
  }
  g.cg = g.cv / g.heads;
  g.pad = g.r * d;
  g.wp = g.w + 2 * g.pad;
  g.nblk = (g.cg + lanes - 1) / lanes;
  g.cvp = g.heads * g.nblk * lanes;
  return g;
}

// A tensor whose channel (last) dimension is contiguous; other strides are kept (a channel slice of
// a channels-last conv output is used in place).
at::Tensor channels_dense(const at::Tensor& t) {
  return t.stride(3) == 1 || t.size(3) <= 1 ? t : t.contiguous();
}

void set_strides(int64_t* out, const at::Tensor& t) {
  for (int i = 0; i < 3; ++i) out[i] = t.stride(i);
}

template <typename acc_t>
struct Ghost {
  // (heads·nblk, K², L): M and D of each channel block, tap-major, padding lanes 0 (M: 1).
  std::vector<acc_t> mul, add;
};

template <typename scalar_t, typename acc_t>
Ghost<acc_t> load_ghost(const Geom& g, const std::optional<at::Tensor>& mul,
                        const std::optional<at::Tensor>& add) {
  constexpr int64_t L = kBlock<acc_t>;
  Ghost<acc_t> out;
  auto fill = [&](std::vector<acc_t>& dst, const std::optional<at::Tensor>& src, acc_t pad_value) {
    if (!src.has_value()) return;
    const at::Tensor t = src->contiguous();
    const scalar_t* p = t.const_data_ptr<scalar_t>();
    dst.assign(g.heads * g.nblk * g.kk * L, pad_value);
    for (int64_t c = 0; c < g.cv; ++c) {
      const int64_t head = c / g.cg, cc = c % g.cg, blk = head * g.nblk + cc / L, lane = cc % L;
      for (int64_t t2 = 0; t2 < g.kk; ++t2)
        dst[(blk * g.kk + t2) * L + lane] = static_cast<acc_t>(p[c * g.kk + t2]);
    }
  };
  fill(out.mul, mul, acc_t(1));
  fill(out.add, add, acc_t(0));
  return out;
}

// Softmax over the K² taps of every head of the Wo pixels of output row i -> dst (Wo, G, kkp),
// each head's K² values padded to kkp (a multiple of 16) slots.
template <int VW, typename scalar_t, typename acc_t>
LOCALATTN_INLINE void softmax_row(acc_t* dst, const scalar_t* logits_row, const Geom& g) {
  for (int64_t j = 0; j < g.wo; ++j) {
    for (int64_t head = 0; head < g.heads; ++head) {
      const scalar_t* src = logits_row + j * g.ls[2] + head * g.kk;
      acc_t* a = dst + (j * g.heads + head) * g.kkp;
      for (int64_t t = 0; t < g.kk; ++t) a[t] = static_cast<acc_t>(src[t]);
      std::fill(a + g.kk, a + g.kkp, -std::numeric_limits<acc_t>::infinity());
      if constexpr (std::is_same_v<acc_t, float>) {
        using N = Native<float, VW>;
        using V = typename N::V;
        V mv = vload<V>(a);
        for (int64_t t = N::VL; t < g.kkp; t += N::VL) {
          const V x = vload<V>(a + t);
          mv = x > mv ? x : mv;
        }
        float mx = mv[0];
        for (int l = 1; l < N::VL; ++l) mx = std::max(mx, float(mv[l]));
        V sv{};
        for (int64_t t = 0; t < g.kkp; t += N::VL) {
          const V e = vexp<V, typename N::I>(vload<V>(a + t) - mx);
          vstore(a + t, e);
          sv += e;
        }
        const V inv = V{} + 1.0f / hsum<float>(sv);
        for (int64_t t = 0; t < g.kkp; t += N::VL) vstore(a + t, vload<V>(a + t) * inv);
      } else {
        acc_t mx = a[0], sum = 0;
        for (int64_t t = 1; t < g.kk; ++t) mx = std::max(mx, a[t]);
        for (int64_t t = 0; t < g.kk; ++t) sum += (a[t] = std::exp(a[t] - mx));
        for (int64_t t = 0; t < g.kk; ++t) a[t] /= sum;
        std::fill(a + g.kk, a + g.kkp, acc_t(0));
      }
    }
  }
}

// The channel block starting at src (nval valid channels) of `count` pixels src[x·stride] ->
// dst[x·step·L], as acc_t with zero padding lanes.
template <typename scalar_t, typename acc_t>
LOCALATTN_INLINE void load_block(acc_t* dst, const scalar_t* src, int64_t count, int64_t stride,
                                 int64_t step, int64_t nval) {
  constexpr int64_t L = kBlock<acc_t>;
  for (int64_t x = 0; x < count; ++x) {
    const scalar_t* s = src + x * stride;
    acc_t* o = dst + x * step * L;
    if constexpr (std::is_same_v<acc_t, scalar_t>) {
      if (nval == L) {  // constant size: inlined vector moves
        std::memcpy(o, s, L * sizeof(acc_t));
        continue;
      }
      std::memcpy(o, s, nval * sizeof(acc_t));
    } else {
      for (int64_t l = 0; l < nval; ++l) o[l] = static_cast<acc_t>(s[l]);
    }
    for (int64_t l = nval; l < L; ++l) o[l] = acc_t(0);
  }
}

// dst[x·dst_stride + l] = src[x·L + l] for the nval valid lanes of `count` pixels.
template <typename scalar_t, typename acc_t>
LOCALATTN_INLINE void store_block(scalar_t* dst, int64_t dst_stride, const acc_t* src, int64_t count,
                                  int64_t nval) {
  constexpr int64_t L = kBlock<acc_t>;
  for (int64_t x = 0; x < count; ++x) {
    if constexpr (std::is_same_v<acc_t, scalar_t>) {
      if (nval == L) std::memcpy(dst + x * dst_stride, src + x * L, L * sizeof(acc_t));
      else std::memcpy(dst + x * dst_stride, src + x * L, nval * sizeof(acc_t));
    } else {
      for (int64_t l = 0; l < nval; ++l) dst[x * dst_stride + l] = static_cast<scalar_t>(src[x * L + l]);
    }
  }
}

// The K zero-padded input rows (wp pixels × L lanes each) of output row i for one channel block;
// rows outside the image are null.
template <typename scalar_t, typename acc_t>
LOCALATTN_INLINE void load_window(const acc_t** rows, acc_t* buffer, const scalar_t* xb,
                                  const Geom& g, int64_t i, int64_t c0, int64_t nval) {
  constexpr int64_t L = kBlock<acc_t>;
  for (int64_t ky = 0; ky < g.k; ++ky) {
    const int64_t y = i * g.s + (ky - g.r) * g.d;
    if (y < 0 || y >= g.h) {
      rows[ky] = nullptr;
      continue;
    }
    acc_t* row = buffer + ky * g.wp * L;
    std::fill(row, row + g.pad * L, acc_t(0));
    std::fill(row + (g.pad + g.w) * L, row + g.wp * L, acc_t(0));
    load_block(row + g.pad * L, xb + y * g.xs[1] + c0, g.w, g.xs[2], 1, nval);
    rows[ky] = row;
  }
}

// The filter value of one tap for NV native vectors: M·a + D, with M = 1 / D = 0 when absent.
template <bool HAS_M, bool HAS_D, typename V>
LOCALATTN_INLINE V filter(V mv, V dv, typename std::remove_reference_t<decltype(V{}[0])> a) {
  if constexpr (HAS_M && HAS_D) return mv * a + dv;
  else if constexpr (HAS_M) return mv * a;
  else if constexpr (HAS_D) return dv + a;
  else return V{} + a;
}

// Pixel-group sizes per vector width (accumulators in registers: 16 ymm / 32 zmm / 16 xmm).
template <int VW>
inline constexpr int kPixels = VW == 64 ? 8 : (VW == 32 ? 4 : 2);

// P pixels j0.. of one channel block: out[p] = Σ_k (M_k·a[p][k] + D_k) · x_k[p].
template <int VW, int P, bool HAS_M, bool HAS_D, typename acc_t, typename S>
LOCALATTN_INLINE void forward_pixels(acc_t* out, const acc_t* const* rows, const acc_t* a,
                                     int64_t a_step, const acc_t* mul, const acc_t* add,
                                     const Geom& g, int64_t j0, S s) {
  using N = Native<acc_t, VW>;
  using V = typename N::V;
  constexpr int NV = N::NV, VL = N::VL;
  constexpr int64_t L = kBlock<acc_t>;
  V acc[P][NV];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[p][v] = V{};
  for (int64_t ky = 0; ky < g.k; ++ky) {
    const acc_t* row = rows[ky];
    if (!row) continue;
    for (int64_t kx = 0; kx < g.k; ++kx) {
      const int64_t t = ky * g.k + kx;
      V mv[NV], dv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        mv[v] = HAS_M ? vload<V>(mul + t * L + v * VL) : V{};
        dv[v] = HAS_D ? vload<V>(add + t * L + v * VL) : V{};
      }
      const acc_t* x = row + (j0 * s + kx * g.d) * L;
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        const acc_t ap = a[(j0 + p) * a_step + t];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
          acc[p][v] += filter<HAS_M, HAS_D>(mv[v], dv[v], ap) * vload<V>(x + p * s * L + v * VL);
      }
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) vstore(out + p * L + v * VL, acc[p][v]);
}

// One channel block of one output row: out (Wo, L).
template <int VW, bool HAS_M, bool HAS_D, typename acc_t, typename S>
LOCALATTN_INLINE void forward_block(acc_t* out, const acc_t* const* rows, const acc_t* a,
                                    int64_t a_step, const acc_t* mul, const acc_t* add,
                                    const Geom& g, S s) {
  constexpr int P = kPixels<VW>;
  constexpr int64_t L = kBlock<acc_t>;
  int64_t j = 0;
  for (; j + P <= g.wo; j += P)
    forward_pixels<VW, P, HAS_M, HAS_D>(out + j * L, rows, a, a_step, mul, add, g, j, s);
  for (; j < g.wo; ++j) forward_pixels<VW, 1, HAS_M, HAS_D>(out + j * L, rows, a, a_step, mul, add, g, j, s);
}

// Pass 1 of the backward for one channel block of output row i: for every valid tap k and pixel j,
// p = g[j]·x_k[j]; grad_a[j][k] += Σ_lanes p·M_k; sum_m[k] = Σ_j p·a[j][k], sum_d[k] = Σ_j p.
template <int VW, bool HAS_M, typename acc_t, typename S>
LOCALATTN_INLINE void backward_attn_block(acc_t* grad_a, acc_t* sum_m, acc_t* sum_d, const acc_t* gout,
                                          const acc_t* const* rows, const acc_t* a, int64_t a_step,
                                          const acc_t* mul, const Geom& g, S s) {
  using N = Native<acc_t, VW>;
  using V = typename N::V;
  constexpr int NV = N::NV, VL = N::VL;
  constexpr int64_t L = kBlock<acc_t>;
  for (int64_t ky = 0; ky < g.k; ++ky) {
    const acc_t* row = rows[ky];
    for (int64_t kx = 0; kx < g.k; ++kx) {
      const int64_t t = ky * g.k + kx;
      V vm[NV], vd[NV], mv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        vm[v] = vd[v] = V{};
        mv[v] = HAS_M ? vload<V>(mul + t * L + v * VL) : V{};
      }
      if (row) {
        const acc_t* x = row + kx * g.d * L;
        for (int64_t j = 0; j < g.wo; ++j) {
          const acc_t aj = a[j * a_step + t];
          V q{};
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) {
            const V p = vload<V>(gout + j * L + v * VL) * vload<V>(x + j * s * L + v * VL);
            vd[v] += p;
            if constexpr (HAS_M) {
              vm[v] += p * aj;
              q += p * mv[v];
            } else {
              q += p;
            }
          }
          grad_a[j * g.kkp + t] += hsum<acc_t>(q);
        }
      }
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        vstore(sum_m + t * L + v * VL, vm[v]);
        vstore(sum_d + t * L + v * VL, vd[v]);
      }
    }
  }
}

// Pass 2 for one channel block, the taps of window row ky, P input pixels x0..: acc[x] +=
// Σ_kx gf[x + (K−1−kx)d] · (M_k·af[x + (K−1−kx)d][kx] + D_k), with gf / af grad_out and A of output
// row i at input resolution (zero where no output pixel sits).
template <int VW, int P, bool HAS_M, bool HAS_D, typename acc_t>
LOCALATTN_INLINE void backward_input_pixels(acc_t* acc_row, const acc_t* gf, const acc_t* af,
                                            const acc_t* mul, const acc_t* add, const Geom& g,
                                            int64_t ky, int64_t x0) {
  using N = Native<acc_t, VW>;
  using V = typename N::V;
  constexpr int NV = N::NV, VL = N::VL;
  constexpr int64_t L = kBlock<acc_t>;
  V acc[P][NV];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[p][v] = vload<V>(acc_row + (x0 + p) * L + v * VL);
  for (int64_t kx = 0; kx < g.k; ++kx) {
    const int64_t t = ky * g.k + kx;
    V mv[NV], dv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      mv[v] = HAS_M ? vload<V>(mul + t * L + v * VL) : V{};
      dv[v] = HAS_D ? vload<V>(add + t * L + v * VL) : V{};
    }
    const int64_t base = x0 + (g.k - 1 - kx) * g.d;
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      const acc_t ap = af[(base + p) * g.k + kx];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        acc[p][v] += vload<V>(gf + (base + p) * L + v * VL) * filter<HAS_M, HAS_D>(mv[v], dv[v], ap);
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) vstore(acc_row + (x0 + p) * L + v * VL, acc[p][v]);
}

template <int VW, bool HAS_M, bool HAS_D, typename acc_t>
LOCALATTN_INLINE void backward_input_block(acc_t* acc_row, const acc_t* gf, const acc_t* af,
                                           const acc_t* mul, const acc_t* add, const Geom& g,
                                           int64_t ky) {
  constexpr int P = kPixels<VW>;
  int64_t x = 0;
  for (; x + P <= g.w; x += P) backward_input_pixels<VW, P, HAS_M, HAS_D>(acc_row, gf, af, mul, add, g, ky, x);
  for (; x < g.w; ++x) backward_input_pixels<VW, 1, HAS_M, HAS_D>(acc_row, gf, af, mul, add, g, ky, x);
}

template <typename T>
LOCALATTN_INLINE const T* offset(const T* p, int64_t n) {
  return p ? p + n : nullptr;
}

// Everything a task range of the three kernels reads and writes (null where a tensor is absent).
template <typename scalar_t, typename acc_t>
struct Args {
  const Geom& g;
  const scalar_t *values, *logits, *grad_out;
  int64_t gs[3];                  // grad_out strides (batch, row, column)
  const acc_t *mul, *add;         // load_ghost() blocks
  scalar_t *out, *grad_logits, *grad_values;
  acc_t *attn, *part_m, *part_d;  // backward scratch: softmax (B·Ho, Wo, G, kkp), partials (B·Ho, K², cvp)
};

// Forward, task (b, output row i). HAS_M / HAS_D / unit stride are template arguments so that the
// hot loops have no branches.
template <int VW, bool HAS_M, bool HAS_D, typename scalar_t, typename acc_t, typename S>
LOCALATTN_INLINE void forward_tasks(const Args<scalar_t, acc_t>& A, int64_t begin, int64_t end, S s) {
  constexpr int64_t L = kBlock<acc_t>;
  const Geom& g = A.g;
  std::vector<acc_t> attn(g.wo * g.heads * g.kkp), rows_buf(g.k * g.wp * L), acc(g.wo * L);
  std::vector<const acc_t*> rows(g.k);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / g.ho, i = task % g.ho;
    softmax_row<VW>(attn.data(), A.logits + b * g.ls[0] + i * g.ls[1], g);
    for (int64_t head = 0; head < g.heads; ++head) {
      for (int64_t blk = 0; blk < g.nblk; ++blk) {
        const int64_t c0 = head * g.cg + blk * L, nval = std::min(L, g.cg - blk * L);
        const int64_t gb = (head * g.nblk + blk) * g.kk * L;
        load_window(rows.data(), rows_buf.data(), A.values + b * g.xs[0], g, i, c0, nval);
        forward_block<VW, HAS_M, HAS_D>(acc.data(), rows.data(), attn.data() + head * g.kkp,
                                        g.heads * g.kkp, offset(A.mul, gb), offset(A.add, gb), g, s);
        store_block(A.out + task * g.wo * g.cv + c0, g.cv, acc.data(), g.wo, nval);
      }
    }
  }
}

// Pass 1 of the backward: softmax (kept in A.attn), grad of the logits, partial ghost sums;
// task (b, output row i).
template <int VW, bool HAS_M, bool HAS_D, typename scalar_t, typename acc_t, typename S>
LOCALATTN_INLINE void backward_attn_tasks(const Args<scalar_t, acc_t>& A, int64_t begin, int64_t end, S s) {
  constexpr int64_t L = kBlock<acc_t>;
  const Geom& g = A.g;
  std::vector<acc_t> rows_buf(g.k * g.wp * L), gout(g.wo * L), grad_a(g.wo * g.kkp);
  std::vector<acc_t> sm(g.kk * L), sd(g.kk * L);
  std::vector<const acc_t*> rows(g.k);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / g.ho, i = task % g.ho;
    acc_t* attn = A.attn + task * g.wo * g.heads * g.kkp;
    softmax_row<VW>(attn, A.logits + b * g.ls[0] + i * g.ls[1], g);
    for (int64_t head = 0; head < g.heads; ++head) {
      std::fill(grad_a.begin(), grad_a.end(), acc_t(0));
      for (int64_t blk = 0; blk < g.nblk; ++blk) {
        const int64_t c0 = head * g.cg + blk * L, nval = std::min(L, g.cg - blk * L);
        const int64_t hb = head * g.nblk + blk;
        load_window(rows.data(), rows_buf.data(), A.values + b * g.xs[0], g, i, c0, nval);
        load_block(gout.data(), A.grad_out + b * A.gs[0] + i * A.gs[1] + c0, g.wo, A.gs[2], 1, nval);
        backward_attn_block<VW, HAS_M>(grad_a.data(), sm.data(), sd.data(), gout.data(), rows.data(),
                                       attn + head * g.kkp, g.heads * g.kkp, offset(A.mul, hb * g.kk * L), g, s);
        if (HAS_M || HAS_D) {
          for (int64_t t = 0; t < g.kk; ++t) {
            const int64_t at = (task * g.kk + t) * g.cvp + hb * L;
            std::copy(sm.begin() + t * L, sm.begin() + (t + 1) * L, A.part_m + at);
            std::copy(sd.begin() + t * L, sd.begin() + (t + 1) * L, A.part_d + at);
          }
        }
      }
      // softmax backward: grad_logit_k = a_k·(grad_a_k − Σ_k' a_k'·grad_a_k')
      for (int64_t j = 0; j < g.wo; ++j) {
        const acc_t* a = attn + (j * g.heads + head) * g.kkp;
        const acc_t* ga = grad_a.data() + j * g.kkp;
        acc_t dot = 0;
        for (int64_t t = 0; t < g.kk; ++t) dot += a[t] * ga[t];
        scalar_t* dst = A.grad_logits + ((task * g.wo + j) * g.heads + head) * g.kk;
        for (int64_t t = 0; t < g.kk; ++t) dst[t] = static_cast<scalar_t>(a[t] * (ga[t] - dot));
      }
    }
  }
}

// Pass 2: grad of the values; task (b, input row y) gathers the output rows i with i·s + (ky − r)·d = y.
template <int VW, bool HAS_M, bool HAS_D, typename scalar_t, typename acc_t, typename S>
LOCALATTN_INLINE void backward_input_tasks(const Args<scalar_t, acc_t>& A, int64_t begin, int64_t end, S) {
  constexpr int64_t L = kBlock<acc_t>;
  const Geom& g = A.g;
  std::vector<acc_t> acc(g.w * L), gf(g.wp * L), af(g.wp * g.k);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / g.h, y = task % g.h;
    for (int64_t head = 0; head < g.heads; ++head) {
      for (int64_t blk = 0; blk < g.nblk; ++blk) {
        const int64_t c0 = head * g.cg + blk * L, nval = std::min(L, g.cg - blk * L);
        const int64_t gb = (head * g.nblk + blk) * g.kk * L;
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t ky = 0; ky < g.k; ++ky) {
          const int64_t num = y - (ky - g.r) * g.d;
          if (num < 0 || num % g.s != 0 || num / g.s >= g.ho) continue;
          const int64_t i = num / g.s;
          if (g.s > 1) {
            std::fill(gf.begin(), gf.end(), acc_t(0));
            std::fill(af.begin(), af.end(), acc_t(0));
          } else {  // only the borders stay zero
            std::fill(gf.begin(), gf.begin() + g.pad * L, acc_t(0));
            std::fill(gf.end() - g.pad * L, gf.end(), acc_t(0));
            std::fill(af.begin(), af.begin() + g.pad * g.k, acc_t(0));
            std::fill(af.end() - g.pad * g.k, af.end(), acc_t(0));
          }
          load_block(gf.data() + g.pad * L, A.grad_out + b * A.gs[0] + i * A.gs[1] + c0, g.wo, A.gs[2], g.s, nval);
          const acc_t* arow = A.attn + (b * g.ho + i) * g.wo * g.heads * g.kkp + head * g.kkp + ky * g.k;
          for (int64_t j = 0; j < g.wo; ++j)
            std::copy(arow + j * g.heads * g.kkp, arow + j * g.heads * g.kkp + g.k,
                      af.data() + (g.pad + j * g.s) * g.k);
          backward_input_block<VW, HAS_M, HAS_D>(acc.data(), gf.data(), af.data(), offset(A.mul, gb), offset(A.add, gb), g, ky);
        }
        store_block(A.grad_values + task * g.w * g.cv + c0, g.cv, acc.data(), g.w, nval);
      }
    }
  }
}

// The (ghost case, stride) specialisation of one task-range function, for one vector width.
#define ELSA_SPECIALISE(NAME, VW)                                                              \
  if (a.mul && a.add) {                                                                        \
    if (a.g.s == 1) NAME<VW, true, true>(a, begin, end, kUnit);                                \
    else NAME<VW, true, true>(a, begin, end, a.g.s);                                           \
  } else if (a.mul) {                                                                          \
    if (a.g.s == 1) NAME<VW, true, false>(a, begin, end, kUnit);                               \
    else NAME<VW, true, false>(a, begin, end, a.g.s);                                          \
  } else if (a.add) {                                                                          \
    if (a.g.s == 1) NAME<VW, false, true>(a, begin, end, kUnit);                               \
    else NAME<VW, false, true>(a, begin, end, a.g.s);                                          \
  } else {                                                                                     \
    if (a.g.s == 1) NAME<VW, false, false>(a, begin, end, kUnit);                              \
    else NAME<VW, false, false>(a, begin, end, a.g.s);                                         \
  }

// Runtime ISA dispatch (common.h `cpu_isa()`, capped by `_set_cpu_isa` in tests): each task-range
// function is compiled for AVX-512 (x86-64-v4, zmm), AVX2+FMA (x86-64-v3, ymm) and the baseline
// ISA (xmm); the hot loops are inlined into each variant.
#if defined(__x86_64__) && defined(__GNUC__)
#define ELSA_ISA_VARIANTS(NAME)                                                                 \
  template <typename scalar_t, typename acc_t>                                                  \
  __attribute__((target("arch=x86-64-v4,prefer-vector-width=512"))) void NAME##_avx512(        \
      const Args<scalar_t, acc_t>& a, int64_t begin, int64_t end) {                            \
    ELSA_SPECIALISE(NAME, 64)                                                                   \
  }                                                                                             \
  template <typename scalar_t, typename acc_t>                                                  \
  __attribute__((target("arch=x86-64-v3"))) void NAME##_avx2(const Args<scalar_t, acc_t>& a,   \
                                                              int64_t begin, int64_t end) {     \
    ELSA_SPECIALISE(NAME, 32)                                                                   \
  }                                                                                             \
  template <typename scalar_t, typename acc_t>                                                  \
  void NAME##_baseline(const Args<scalar_t, acc_t>& a, int64_t begin, int64_t end) {           \
    ELSA_SPECIALISE(NAME, 16)                                                                   \
  }
#define ELSA_RUN_ISA(NAME, isa, a, begin, end)             \
  (isa == CpuIsa::kAvx512 ? NAME##_avx512(a, begin, end) \
   : isa == CpuIsa::kAvx2 ? NAME##_avx2(a, begin, end)   \
                          : NAME##_baseline(a, begin, end))
#else
#define ELSA_ISA_VARIANTS(NAME)                                                                 \
  template <typename scalar_t, typename acc_t>                                                  \
  void NAME##_baseline(const Args<scalar_t, acc_t>& a, int64_t begin, int64_t end) {           \
    ELSA_SPECIALISE(NAME, 16)                                                                   \
  }
#define ELSA_RUN_ISA(NAME, isa, a, begin, end) NAME##_baseline(a, begin, end)
#endif
ELSA_ISA_VARIANTS(forward_tasks)
ELSA_ISA_VARIANTS(backward_attn_tasks)
ELSA_ISA_VARIANTS(backward_input_tasks)

template <typename scalar_t>
void forward_kernel(const Geom& g, const at::Tensor& logits, const at::Tensor& values,
                    const std::optional<at::Tensor>& mul, const std::optional<at::Tensor>& add,
                    at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const Ghost<acc_t> ghost = load_ghost<scalar_t, acc_t>(g, mul, add);
  const Args<scalar_t, acc_t> a{g, values.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(),
                                nullptr, {0, 0, 0}, ghost.mul.empty() ? nullptr : ghost.mul.data(),
                                ghost.add.empty() ? nullptr : ghost.add.data(), out.data_ptr<scalar_t>(),
                                nullptr, nullptr, nullptr, nullptr, nullptr};
  const CpuIsa isa = cpu_isa();
  at::parallel_for(0, g.b * g.ho, grain(g.cv * g.kk * g.wo), [&](int64_t begin, int64_t end) {
    ELSA_RUN_ISA(forward_tasks, isa, a, begin, end);
  });
}

template <typename scalar_t>
void backward_kernel(const Geom& g, const at::Tensor& go, const at::Tensor& logits,
                     const at::Tensor& values, const std::optional<at::Tensor>& mul,
                     const std::optional<at::Tensor>& add, at::Tensor& grad_logits,
                     at::Tensor& grad_values, at::Tensor& grad_mul, at::Tensor& grad_add) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t L = kBlock<acc_t>;
  const Ghost<acc_t> ghost = load_ghost<scalar_t, acc_t>(g, mul, add);
  const int64_t tasks = g.b * g.ho;
  const auto acc_options = values.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  const bool need_ghost = mul.has_value() || add.has_value();
  at::Tensor attn_t = at::empty({tasks, g.wo, g.heads * g.kkp}, acc_options);
  at::Tensor part_t = at::empty({need_ghost ? 2 : 0, tasks, g.kk, g.cvp}, acc_options);
  acc_t* part_m = need_ghost ? part_t.data_ptr<acc_t>() : nullptr;
  Args<scalar_t, acc_t> a{g, values.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(),
                          go.const_data_ptr<scalar_t>(), {go.stride(0), go.stride(1), go.stride(2)},
                          ghost.mul.empty() ? nullptr : ghost.mul.data(),
                          ghost.add.empty() ? nullptr : ghost.add.data(), nullptr,
                          grad_logits.data_ptr<scalar_t>(), grad_values.data_ptr<scalar_t>(),
                          attn_t.data_ptr<acc_t>(), part_m,
                          need_ghost ? part_m + tasks * g.kk * g.cvp : nullptr};
  const CpuIsa isa = cpu_isa();
  at::parallel_for(0, tasks, grain(g.cv * g.kk * g.wo), [&](int64_t begin, int64_t end) {
    ELSA_RUN_ISA(backward_attn_tasks, isa, a, begin, end);
  });

  // Ghost gradients: sums of the partials over tasks in task order; task = tap.
  if (need_ghost) {
    scalar_t* gmp = mul ? grad_mul.data_ptr<scalar_t>() : nullptr;
    scalar_t* gdp = add ? grad_add.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, g.kk, grain(tasks * g.cvp), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> sum_m(g.cvp), sum_d(g.cvp);
      for (int64_t t = begin; t < end; ++t) {
        std::fill(sum_m.begin(), sum_m.end(), acc_t(0));
        std::fill(sum_d.begin(), sum_d.end(), acc_t(0));
        for (int64_t task = 0; task < tasks; ++task) {
          const acc_t *pm = a.part_m + (task * g.kk + t) * g.cvp, *pd = a.part_d + (task * g.kk + t) * g.cvp;
          for (int64_t cp = 0; cp < g.cvp; ++cp) sum_m[cp] += pm[cp], sum_d[cp] += pd[cp];
        }
        for (int64_t c = 0; c < g.cv; ++c) {
          const int64_t cc = c % g.cg, cp = ((c / g.cg) * g.nblk + cc / L) * L + cc % L;
          if (gmp) gmp[c * g.kk + t] = static_cast<scalar_t>(sum_m[cp]);
          if (gdp) gdp[c * g.kk + t] = static_cast<scalar_t>(sum_d[cp]);
        }
      }
    });
  }

  at::parallel_for(0, g.b * g.h, grain(g.cv * g.kk * g.w), [&](int64_t begin, int64_t end) {
    ELSA_RUN_ISA(backward_input_tasks, isa, a, begin, end);
  });
}

int64_t lanes_for(at::ScalarType type) { return type == at::kDouble ? 8 : 16; }

at::Tensor elsa_attention_cpu(const at::Tensor& logits_in, const at::Tensor& values_in,
                              const std::optional<at::Tensor>& ghost_mul,
                              const std::optional<at::Tensor>& ghost_add, int64_t kernel_size,
                              int64_t dilation, int64_t stride) {
  Geom g = make_geom(logits_in, values_in, ghost_mul, ghost_add, kernel_size, dilation, stride,
                     lanes_for(values_in.scalar_type()));
  const at::Tensor logits = channels_dense(logits_in), values = channels_dense(values_in);
  set_strides(g.xs, values);
  set_strides(g.ls, logits);
  at::Tensor out = empty_output({g.b, g.ho, g.wo, g.cv}, values.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, values.scalar_type(), "elsa_attention_cpu", [&] {
    forward_kernel<scalar_t>(g, logits, values, ghost_mul, ghost_add, out);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> elsa_attention_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& logits_in, const at::Tensor& values_in,
    const std::optional<at::Tensor>& ghost_mul, const std::optional<at::Tensor>& ghost_add,
    int64_t kernel_size, int64_t dilation, int64_t stride) {
  Geom g = make_geom(logits_in, values_in, ghost_mul, ghost_add, kernel_size, dilation, stride,
                     lanes_for(values_in.scalar_type()));
  check_float(grad_out_in, "grad_out", values_in);
  check_shape(grad_out_in, {g.b, g.ho, g.wo, g.cv}, kOp, "grad_out");
  const at::Tensor logits = channels_dense(logits_in), values = channels_dense(values_in);
  const at::Tensor go = channels_dense(grad_out_in);
  set_strides(g.xs, values);
  set_strides(g.ls, logits);
  at::Tensor grad_logits = empty_output(logits.sizes(), logits.options());
  at::Tensor grad_values = empty_output(values.sizes(), values.options());
  at::Tensor grad_mul = ghost_mul ? at::empty(ghost_mul->sizes(), values.options()) : at::empty({0}, values.options());
  at::Tensor grad_add = ghost_add ? at::empty(ghost_add->sizes(), values.options()) : at::empty({0}, values.options());
  if (go.numel() == 0) {  // no output pixel reads the inputs
    grad_logits.zero_(), grad_values.zero_(), grad_mul.zero_(), grad_add.zero_();
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, values.scalar_type(), "elsa_attention_backward_cpu", [&] {
      backward_kernel<scalar_t>(g, go, logits, values, ghost_mul, ghost_add, grad_logits,
                                     grad_values, grad_mul, grad_add);
    });
  }
  return {grad_logits, grad_values, grad_mul, grad_add};
}

// Autocast (CPU and CUDA): every floating input in the autocast dtype (bf16 / fp16), so the kernel
// reads half-width tensors and accumulates in float32 — not a cast round-trip through float32.
template <c10::DispatchKey KEY, c10::DeviceType DEVICE>
at::Tensor elsa_attention_autocast(const at::Tensor& logits, const at::Tensor& values,
                                   const std::optional<at::Tensor>& ghost_mul,
                                   const std::optional<at::Tensor>& ghost_add, int64_t kernel_size,
                                   int64_t dilation, int64_t stride) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(KEY);
  const auto dtype = at::autocast::get_autocast_dtype(DEVICE);
  auto cast = [&](const at::Tensor& t) { return at::autocast::cached_cast(dtype, t, DEVICE); };
  auto cast_opt = [&](const std::optional<at::Tensor>& t) {
    return t.has_value() ? std::optional<at::Tensor>(cast(*t)) : std::nullopt;
  };
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("localattn::elsa_attention", "")
                       .typed<decltype(elsa_attention_cpu)>();
  return op.call(cast(logits), cast(values), cast_opt(ghost_mul), cast_opt(ghost_add), kernel_size,
                 dilation, stride);
}

}  // namespace
}  // namespace localattn::cpu

TORCH_LIBRARY_FRAGMENT(localattn, m) {
  m.def(
      "elsa_attention(Tensor logits, Tensor values, Tensor? ghost_mul, Tensor? ghost_add, "
      "int kernel_size, int dilation, int stride) -> Tensor");
  m.def(
      "elsa_attention_backward(Tensor grad_out, Tensor logits, Tensor values, Tensor? ghost_mul, "
      "Tensor? ghost_add, int kernel_size, int dilation, int stride) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(localattn, CPU, m) {
  m.impl("elsa_attention", &localattn::cpu::elsa_attention_cpu);
  m.impl("elsa_attention_backward", &localattn::cpu::elsa_attention_backward_cpu);
}

TORCH_LIBRARY_IMPL(localattn, AutocastCPU, m) {
  m.impl("elsa_attention", &localattn::cpu::elsa_attention_autocast<c10::DispatchKey::AutocastCPU,
                                                                     c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(localattn, AutocastCUDA, m) {
  m.impl("elsa_attention", &localattn::cpu::elsa_attention_autocast<c10::DispatchKey::AutocastCUDA,
                                                                     c10::DeviceType::CUDA>);
}
