// Fused ELSA attention `localattn::elsa_attention`: the kernels, shared by the forward
// (elsa_attention.cpp: schemas, forward, autocast) and the backward (elsa_attention_backward.cpp),
// which are compiled as two translation units. Python reference and the full statement:
// ops/reference.py `elsa_attention`. On the channels-last tensors the ELSA layer has:
//
//   logits (B, Ho, Wo, G·K²)   pre-softmax, channel g·K² + k       A = softmax over k (fp32)
//   values (B, H, W, G·C)      X, channel g·C + c                   Ho = H // s, Wo = W // s
//   ghost_mul, ghost_add (G·C, K, K) or None: M (ones), D (zeros), shared by the batch
//   out[b,i,j,g·C+c] = Σ_k (M[g·C+c,k]·A[b,i,j,g,k] + D[g·C+c,k]) · X[b, i·s+(ky−r)d, j·s+(kx−r)d, g·C+c]
//
// Every kernel is vectorised over a block of L channels of one head (L = 64 bytes of the
// accumulation type: 16 floats; GCC vector extensions, lowered to SSE / AVX2 / AVX-512 in the ISA
// variants at the end of this file), so the work per multiply-add does not depend on the map size.
// Zero borders come from zero-padded row buffers of the block (which also convert bf16/fp16 to
// float once). Softmax is fused: computed per output row and head into a small buffer.
//   forward, task (b, band of output rows; the tensors are read and written as whole rows): per row
//     and head, the head's softmax, then per channel block the K padded input rows (from a row
//     cache: each input row is converted once per band, not K times), then groups of P pixels
//     accumulate all K² taps in registers.
//   backward pass 1, same tasks: softmax recomputed (and kept for pass 2), grad of A per pixel and
//     tap (a dot product over the head's channels), its softmax backward -> grad_logits; partial
//     ghost gradients per output row, then reduced over the rows in a fixed order.
//   backward pass 2, task (b, input row y): grad of values as a gather over the output rows and
//     columns whose window covers the pixel (stride handled by an input-resolution, zero-filled copy
//     of grad_out and A).
// Each output element is written by one task and every sum has a fixed order: results are bit-equal
// for any thread count. All indexing is int64_t.
#pragma once

#include "cpu/common.h"

#include <cmath>
#include <cstring>
#include <limits>

// The vector helpers below are always inlined into their ISA variant; no vector crosses a call.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace localattn::cpu::elsa {

inline constexpr const char* kOp = "localattn::elsa_attention";

// A channel block is 64 bytes of the accumulation type (L = 16 floats / 8 doubles), the same for
// every ISA (so scratch layouts are too); a kernel compiled for vectors of VW bytes handles it as
// NV = 64 / VW native vectors of VL lanes (GCC vector extensions: one zmm, two ymm or four xmm).
template <typename T>
inline constexpr int64_t kBlock = 64 / sizeof(T);

template <typename T, int VW>
struct Native {
  typedef T V __attribute__((vector_size(VW)));
  typedef uint32_t U __attribute__((vector_size(VW / sizeof(T) * 4)));
  typedef std::conditional_t<sizeof(T) == 8, int64_t, int32_t> MaskLane;
  typedef MaskLane M __attribute__((vector_size(VW)));  // shuffle masks
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

// e^x on a vector of floats x <= 0 (softmax logits after the max subtraction). Lanes with x < -87.3
// (the -inf padding taps among them) are found by an unsigned compare of their bits (a NaN of sign 0
// passes) and give 0: their e^x would be under 2^-125, and the softmax normalisation would turn it
// into a subnormal, which Intel cores produce through a microcode assist (~100+ cycles per
// instruction; the padding made every pixel pay it). n = round(x / ln 2) by the 1.5·2^23 shift whose
// low bits are also 2^n's exponent, e^r on |r| <= ln 2 / 2 by Cephes expf's degree-5 polynomial (~1 ulp).
template <typename V, typename U>
LOCALATTN_INLINE V vexp_nonpositive(V x) {
  U bits = (U)x;  // a cast between vector types of one size keeps the bits (GCC vector extensions)
  const auto in_range = bits < 0xC2AE0000u;
  bits = in_range ? bits : U{} + 0xC2AE0000u;  // clamped: finite through the polynomial, 0 at the end
  x = (V)bits;
  const V shifted = x * 1.44269504088896341f + 12582912.0f;
  const V n = shifted - 12582912.0f;
  V r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = V{} + 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  const U scale = ((U)shifted - (0x4B400000u - 127u)) << 23;
  return in_range ? p * (V)scale : V{};
}

// v with lanes l and l ^ S exchanged.
template <int S, typename V, typename M>
LOCALATTN_INLINE V swap_lanes(V v) {
  M mask;
#pragma GCC unroll 16
  for (int l = 0; l < int(sizeof(V) / sizeof(mask[0])); ++l) mask[l] = l ^ S;
  return __builtin_shuffle(v, mask);
}

// Every lane = the max (Max) or the sum of v's lanes, in log2(lanes) shuffle steps.
template <bool Max, int VL, typename V, typename I>
LOCALATTN_INLINE V reduce_lanes(V v) {
  if constexpr (VL > 1) {
    v = reduce_lanes<Max, VL / 2, V, I>(v);
    const V u = swap_lanes<VL / 2, V, I>(v);
    if constexpr (Max) return v > u ? v : u;
    else return v + u;
  }
  return v;
}

// Lane l of the result = the sum of the lanes of v[l], for VL vectors of VL lanes: log2(VL) levels
// that each add pairs of vectors through two two-source shuffles (a transposing reduction; one
// vector per VL sums instead of a horizontal sum each). v is overwritten.
template <int W, int VL, typename V, typename M>
LOCALATTN_INLINE V transpose_sum(V* v) {
  M lo, hi;
#pragma GCC unroll 16
  for (int l = 0; l < VL; ++l) {
    lo[l] = (l & W) ? VL + l : l;          // (l & W) ? b[l] : a[l]
    hi[l] = (l & W) ? VL + l - W : l + W;  // (l & W) ? b[l − W] : a[l + W]
  }
#pragma GCC unroll 16
  for (int k = 0; k < VL / W / 2; ++k)
    v[k] = __builtin_shuffle(v[2 * k], v[2 * k + 1], lo) + __builtin_shuffle(v[2 * k], v[2 * k + 1], hi);
  if constexpr (2 * W < VL) return transpose_sum<2 * W, VL, V, M>(v);
  else return v[0];
}

struct Geom {
  int64_t b, h, w, cv, heads, cg, k, kk, kkp, d, s, r, ho, wo, pad, wp, nblk, cvp;
  int64_t xs[3], ls[3];  // element strides (batch, row, column) of values and logits; channels: 1
};

inline void check_float(const at::Tensor& t, const char* name, const at::Tensor& like) {
  check_cpu_float(t, kOp, name, like);
}

inline Geom make_geom(const at::Tensor& logits, const at::Tensor& values,
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
inline at::Tensor channels_dense(const at::Tensor& t) {
  return t.stride(3) == 1 || t.size(3) <= 1 ? t : t.contiguous();
}

inline void set_strides(int64_t* out, const at::Tensor& t) {
  for (int i = 0; i < 3; ++i) out[i] = t.stride(i);
}

template <typename acc_t>
struct Ghost {
  // (heads·nblk, K², L): M and D of each channel block, tap-major, padding lanes 0 (M: 1).
  Scratch<acc_t> mul, add;
};

template <typename scalar_t, typename acc_t>
Ghost<acc_t> load_ghost(const Geom& g, const std::optional<at::Tensor>& mul,
                        const std::optional<at::Tensor>& add) {
  constexpr int64_t L = kBlock<acc_t>;
  Ghost<acc_t> out;
  auto fill = [&](Scratch<acc_t>& dst, const std::optional<at::Tensor>& src, acc_t pad_value) {
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

// VL logits src[0 : VL] as a float vector: one load (bfloat16: widened by a shift).
template <typename V, int VL, typename scalar_t>
LOCALATTN_INLINE V load_whole(const scalar_t* src) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return vload<V>(src);
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    typedef uint16_t H __attribute__((vector_size(VL * 2)));
    typedef uint32_t U __attribute__((vector_size(VL * 4)));
    return (V)(__builtin_convertvector(vload<H>(src), U) << 16);
  } else {
    V x;
    for (int l = 0; l < VL; ++l) x[l] = static_cast<float>(src[l]);
    return x;
  }
}

// The n <= VL logits src[0 : n] as a float vector, lanes from n up -inf (they add e^-inf = 0). The
// softmax stores and reloads only whole aligned vectors: a vector load of lanes written one by one
// (a partial vector assembled in memory) cannot be forwarded from the store buffer and waits for the
// stores to retire. So a partial vector, when the VL values before src + n are readable
// (`look_back`: the head has >= VL taps), is the whole vector ending at src + n moved down by VL − n
// lanes (one permute).
template <typename V, typename M, int VL, typename scalar_t>
LOCALATTN_INLINE V load_logits(const scalar_t* src, int64_t n, bool look_back) {
  if (n == VL) return load_whole<V, VL>(src);
  const V minus_inf = V{} - std::numeric_limits<float>::infinity();
  if (look_back) {
    M lane;
#pragma GCC unroll 16
    for (int l = 0; l < VL; ++l) lane[l] = l;
    const V moved = __builtin_shuffle(load_whole<V, VL>(src + n - VL), lane + static_cast<int>(VL - n));
    return lane < static_cast<int>(n) ? moved : minus_inf;
  }
  V x = minus_inf;
  for (int64_t l = 0; l < n; ++l) x[l] = static_cast<float>(src[l]);
  return x;
}

// Softmax over the K² taps of Q pixels (float): src[q·src_step + k] -> dst[q·dst_step + k]. The
// exponentials run over the K² values rounded up to whole native vectors (-inf padding); slots from
// there up to kkp are left as they are (no reader looks past K²). The Q pixels' reduction chains
// are independent and overlap; the normalisation multiplies by one scalar reciprocal per pixel (a
// full-width vector division costs as much as 16 of them).
template <int VW, int Q, typename scalar_t>
LOCALATTN_INLINE void softmax_pixels(float* dst, int64_t dst_step, const scalar_t* src, int64_t src_step,
                                     int64_t kk) {
  using N = Native<float, VW>;
  using V = typename N::V;
  const int64_t kv = (kk + N::VL - 1) / N::VL * N::VL;
  float* a[Q];
  V mv[Q], sv[Q];
  float inv[Q];
#pragma GCC unroll 4
  for (int q = 0; q < Q; ++q) {
    a[q] = dst + q * dst_step;
    mv[q] = V{} - std::numeric_limits<float>::infinity();
    sv[q] = V{};
  }
  for (int64_t t = 0; t < kv; t += N::VL)
#pragma GCC unroll 4
    for (int q = 0; q < Q; ++q) {
      const V x = load_logits<V, typename N::M, N::VL>(src + q * src_step + t, std::min<int64_t>(N::VL, kk - t),
                                                       kk >= N::VL);
      vstore(a[q] + t, x);
      mv[q] = x > mv[q] ? x : mv[q];
    }
#pragma GCC unroll 4
  for (int q = 0; q < Q; ++q) mv[q] = reduce_lanes<true, N::VL, V, typename N::M>(mv[q]);
  for (int64_t t = 0; t < kv; t += N::VL)
#pragma GCC unroll 4
    for (int q = 0; q < Q; ++q) {
      const V e = vexp_nonpositive<V, typename N::U>(vload<V>(a[q] + t) - mv[q]);
      vstore(a[q] + t, e);
      sv[q] += e;
    }
#pragma GCC unroll 4
  for (int q = 0; q < Q; ++q) inv[q] = 1.0f / reduce_lanes<false, N::VL, V, typename N::M>(sv[q])[0];
  for (int64_t t = 0; t < kv; t += N::VL)
#pragma GCC unroll 4
    for (int q = 0; q < Q; ++q) vstore(a[q] + t, vload<V>(a[q] + t) * inv[q]);
}

// Softmax over the K² taps of one head for the Wo pixels of an output row -> dst[j·dst_step + k].
template <int VW, typename scalar_t, typename acc_t>
LOCALATTN_INLINE void softmax_head(acc_t* dst, int64_t dst_step, const scalar_t* logits_row, const Geom& g,
                                   int64_t head) {
  const scalar_t* src = logits_row + head * g.kk;
  if constexpr (std::is_same_v<acc_t, float>) {
    constexpr int Q = VW == 64 ? 4 : 2;  // independent pixels in flight (registers: 2·Q vectors)
    int64_t j = 0;
    for (; j + Q <= g.wo; j += Q)
      softmax_pixels<VW, Q>(dst + j * dst_step, dst_step, src + j * g.ls[2], g.ls[2], g.kk);
    for (; j < g.wo; ++j) softmax_pixels<VW, 1>(dst + j * dst_step, dst_step, src + j * g.ls[2], g.ls[2], g.kk);
  } else {
    for (int64_t j = 0; j < g.wo; ++j) {
      acc_t* a = dst + j * dst_step;
      for (int64_t t = 0; t < g.kk; ++t) a[t] = static_cast<acc_t>(src[j * g.ls[2] + t]);
      acc_t mx = a[0], sum = 0;
      for (int64_t t = 1; t < g.kk; ++t) mx = std::max(mx, a[t]);
      for (int64_t t = 0; t < g.kk; ++t) sum += (a[t] = std::exp(a[t] - mx));
      for (int64_t t = 0; t < g.kk; ++t) a[t] /= sum;
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

// Zero-padded input rows (wp pixels × L lanes) of every channel block, cached by row:
// output row i needs input rows i·s + (ky − r)·d, which fall in distinct slots y mod (2r·d + 1).
// Walking the output rows of a band in order, each input row is loaded once per band and block,
// not once per tap row (an evicted row is never needed again).
template <typename acc_t>
class RowCache {
 public:
  static constexpr int64_t L = kBlock<acc_t>;
  RowCache(const Geom& g)
      : g_(g), slots_(2 * g.r * g.d + 1), buffer_(g.heads * g.nblk * slots_ * g.wp * L, acc_t(0)),
        held_(g.heads * g.nblk * slots_) {}

  void clear() { std::fill(held_.begin(), held_.end(), int64_t(-1)); }

  // rows[ky] = the padded row y = i·s + (ky − r)·d of block blk (head·nblk + block; channels c0..,
  // nval valid) of image xb, null outside the image. Borders stay zero: loads write the interior only.
  template <typename scalar_t>
  LOCALATTN_INLINE void window(const acc_t** rows, const scalar_t* xb, int64_t i, int64_t blk, int64_t c0,
                               int64_t nval) {
    for (int64_t ky = 0; ky < g_.k; ++ky) {
      const int64_t y = i * g_.s + (ky - g_.r) * g_.d;
      if (y < 0 || y >= g_.h) {
        rows[ky] = nullptr;
        continue;
      }
      const int64_t slot = blk * slots_ + y % slots_;
      acc_t* row = buffer_.data() + slot * g_.wp * L;
      if (held_[slot] != y) {
        load_block(row + g_.pad * L, xb + y * g_.xs[1] + c0, g_.w, g_.xs[2], 1, nval);
        held_[slot] = y;
      }
      rows[ky] = row;
    }
  }

 private:
  const Geom& g_;
  int64_t slots_;
  Scratch<acc_t> buffer_;
  std::vector<int64_t> held_;
};

// Output rows per task of the row-band kernels (task = (b, band)): whole maps unless that leaves
// fewer than 4 tasks per thread. Results do not depend on it.
inline int64_t band_rows(const Geom& g) {
  const int64_t want = 4 * at::get_num_threads();
  const int64_t bands = std::clamp<int64_t>((want + g.b - 1) / g.b, 1, std::max<int64_t>(g.ho, 1));
  return (g.ho + bands - 1) / bands;
}

inline int64_t band_tasks(const Geom& g, int64_t band) { return g.b * ((g.ho + band - 1) / band); }

// Requests the cache lines of `count` spans of `bytes` bytes at p + x·stride (elements), for
// reading or (WRITE) writing: the rows a band task reads and writes next are strided slices of
// channels-last tensors, which the hardware prefetchers do not follow in time.
template <bool WRITE = false, typename T>
LOCALATTN_INLINE void prefetch_spans(const T* p, int64_t count, int64_t stride, int64_t bytes) {
  for (int64_t x = 0; x < count; ++x) {
    const char* q = reinterpret_cast<const char*>(p + x * stride);
    for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(q + o, WRITE);
    __builtin_prefetch(q + bytes - 1, WRITE);
  }
}

// Prefetch of what output row i of image b reads that row i − 1 did not: its logits and the one
// new input row.
template <typename scalar_t>
LOCALATTN_INLINE void prefetch_row(const Geom& g, const scalar_t* logits, const scalar_t* values, int64_t b,
                                   int64_t i) {
  prefetch_spans(logits + b * g.ls[0] + i * g.ls[1], g.wo, g.ls[2], g.heads * g.kk * sizeof(scalar_t));
  const int64_t y = i * g.s + g.r * g.d;
  if (y < g.h) prefetch_spans(values + b * g.xs[0] + y * g.xs[1], g.w, g.xs[2], g.cv * sizeof(scalar_t));
}

// Image and output rows [i0, i1) of one band task. (Not a callback: a lambda's body would not get
// the ISA of the target-specific function that calls it.)
struct BandTask {
  int64_t b, i0, i1;
};

LOCALATTN_INLINE BandTask band_task(const Geom& g, int64_t band, int64_t task) {
  const int64_t nbands = band_tasks(g, band) / g.b, i0 = task % nbands * band;
  return {task / nbands, i0, std::min(g.ho, i0 + band)};
}

// The filter value of one tap for NV native vectors: M·a + D, with M = 1 / D = 0 when absent.
template <bool HAS_M, bool HAS_D, typename V>
LOCALATTN_INLINE V filter(V mv, V dv, typename std::remove_reference_t<decltype(V{}[0])> a) {
  if constexpr (HAS_M && HAS_D) return mv * a + dv;
  else if constexpr (HAS_M) return mv * a;
  else if constexpr (HAS_D) return dv + a;
  else return V{} + a;
}

// The ghost values M_t / D_t of tap t for one channel block, as NV native vectors (zero when absent).
template <bool HAS_M, bool HAS_D, int NV, int VL, typename V, typename acc_t>
LOCALATTN_INLINE void load_tap_ghost(V* mv, V* dv, const acc_t* mul, const acc_t* add, int64_t t) {
  constexpr int64_t L = kBlock<acc_t>;
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    mv[v] = HAS_M ? vload<V>(mul + t * L + v * VL) : V{};
    dv[v] = HAS_D ? vload<V>(add + t * L + v * VL) : V{};
  }
}

// Pixel-group sizes per vector width (accumulators in registers: 16 ymm / 32 zmm / 16 xmm).
template <int VW>
inline constexpr int kPixels = VW == 64 ? 8 : (VW == 32 ? 4 : 2);

// P pixels j0.. of one channel block: out[p·out_step] = Σ_k (M_k·a[p][k] + D_k) · x_k[p].
template <int VW, int P, bool HAS_M, bool HAS_D, typename acc_t, typename S>
LOCALATTN_INLINE void forward_pixels(acc_t* out, int64_t out_step, const acc_t* const* rows, const acc_t* a,
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
      load_tap_ghost<HAS_M, HAS_D, NV, VL>(mv, dv, mul, add, t);
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
    for (int v = 0; v < NV; ++v) vstore(out + p * out_step + v * VL, acc[p][v]);
}

// forward_pixels for stride 1 and dilation 1 with one native vector per block (AVX-512 float): pixel
// j0 + p reads tap kx of a window row at column j0 + p + kx, so the P pixels read P + K − 1 distinct
// vectors per window row, not P·K. Each is loaded once and kept while a pixel of the group still
// needs it (xv[p] = column j0 + p + kx), which halves the loads per multiply-add.
template <int VW, int P, bool HAS_M, bool HAS_D, typename acc_t>
LOCALATTN_INLINE void forward_pixels_dense(acc_t* out, int64_t out_step, const acc_t* const* rows,
                                           const acc_t* a, int64_t a_step, const acc_t* mul, const acc_t* add,
                                           const Geom& g, int64_t j0) {
  using N = Native<acc_t, VW>;
  using V = typename N::V;
  static_assert(N::NV == 1, "one native vector per channel block");
  constexpr int64_t L = kBlock<acc_t>;
  V acc[P];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) acc[p] = V{};
  for (int64_t ky = 0; ky < g.k; ++ky) {
    const acc_t* row = rows[ky];
    if (!row) continue;
    const acc_t* x = row + j0 * L;
    V xv[P];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) xv[p] = vload<V>(x + p * L);
    for (int64_t kx = 0; kx < g.k; ++kx) {
      const int64_t t = ky * g.k + kx;
      V mv[1], dv[1];
      load_tap_ghost<HAS_M, HAS_D, 1, N::VL>(mv, dv, mul, add, t);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) acc[p] += filter<HAS_M, HAS_D>(mv[0], dv[0], a[(j0 + p) * a_step + t]) * xv[p];
#pragma GCC unroll 8
      for (int p = 0; p + 1 < P; ++p) xv[p] = xv[p + 1];
      if (kx + 1 < g.k) xv[P - 1] = vload<V>(x + (kx + P) * L);
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) vstore(out + p * out_step, acc[p]);
}

// One channel block of one output row: out[j·out_step + 0:L] for the Wo pixels j.
template <int VW, bool HAS_M, bool HAS_D, typename acc_t, typename S>
LOCALATTN_INLINE void forward_block(acc_t* out, int64_t out_step, const acc_t* const* rows, const acc_t* a,
                                    int64_t a_step, const acc_t* mul, const acc_t* add,
                                    const Geom& g, S s) {
  constexpr int P = kPixels<VW>;
  int64_t j = 0;
  if constexpr (std::is_same_v<S, Unit> && Native<acc_t, VW>::NV == 1) {
    if (g.d == 1) {
      for (; j + P <= g.wo; j += P)
        forward_pixels_dense<VW, P, HAS_M, HAS_D>(out + j * out_step, out_step, rows, a, a_step, mul, add, g, j);
    }
  }
  for (; j + P <= g.wo; j += P)
    forward_pixels<VW, P, HAS_M, HAS_D>(out + j * out_step, out_step, rows, a, a_step, mul, add, g, j, s);
  for (; j < g.wo; ++j)
    forward_pixels<VW, 1, HAS_M, HAS_D>(out + j * out_step, out_step, rows, a, a_step, mul, add, g, j, s);
}

// The products p = g[j]·x_k[j] of pixel j and tap k for one channel block: returns the vector
// whose lane sum is grad_a[j][k]'s part from the block (Σ p·M_k), and adds p·a[j][k] to vm, p to vd.
template <int NV, bool HAS_M, typename V, typename acc_t>
LOCALATTN_INLINE V tap_products(V* vm, V* vd, const V* mv, const acc_t* gout, const acc_t* x, acc_t aj) {
  constexpr int VL = 64 / NV / sizeof(acc_t);
  V q{};
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const V p = vload<V>(gout + v * VL) * vload<V>(x + v * VL);
    vd[v] += p;
    if constexpr (HAS_M) {
      vm[v] += p * aj;
      q += p * mv[v];
    } else {
      q += p;
    }
  }
  return q;
}

// Pass 1 of the backward for one channel block of output row i: for every valid tap k and pixel j,
// p = g[j]·x_k[j]; grad_a[k·wop + j] += Σ_lanes p·M_k; sum_m[k·sum_step] = Σ_j p·a[j][k] (HAS_M) and
// sum_d[k·sum_step] = Σ_j p (HAS_D): the partial ghost gradients.
// The lane sums of VL pixels are done together (transpose_sum).
template <int VW, bool HAS_M, bool HAS_D, typename acc_t, typename S>
LOCALATTN_INLINE void backward_attn_block(acc_t* grad_a, int64_t wop, acc_t* sum_m, acc_t* sum_d,
                                          int64_t sum_step, const acc_t* gout, const acc_t* const* rows, const acc_t* a,
                                          int64_t a_step, const acc_t* mul, const Geom& g, S s) {
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
        acc_t* ga = grad_a + t * wop;
        // VL pixels at a time, the last group padded with zero products (grad_a rows are wop >= Wo
        // long): short rows (14 pixels at stage 3) take the transposing reduction too.
        for (int64_t j = 0; j < g.wo; j += VL) {
          const int64_t n = std::min<int64_t>(VL, g.wo - j);
          V q[VL];
#pragma GCC unroll 16
          for (int u = 0; u < VL; ++u)
            q[u] = u < n ? tap_products<NV, HAS_M>(vm, vd, mv, gout + (j + u) * L, x + (j + u) * s * L,
                                                   a[(j + u) * a_step + t])
                         : V{};
          vstore(ga + j, vload<V>(ga + j) + transpose_sum<1, VL, V, typename N::M>(q));
        }
      }
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        if constexpr (HAS_M) vstore(sum_m + t * sum_step + v * VL, vm[v]);
        if constexpr (HAS_D) vstore(sum_d + t * sum_step + v * VL, vd[v]);
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
    load_tap_ghost<HAS_M, HAS_D, NV, VL>(mv, dv, mul, add, t);
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

// backward_input_pixels for dilation 1 with one native vector per block (AVX-512 float), as
// forward_pixels_dense: tap kx of the P pixels reads gf at x0 + K − 1 − kx + p, so the P + K − 1
// vectors are each loaded once (xv[p] = gf at x0 + K − 1 − kx + p, shifted down a column per tap).
template <int VW, int P, bool HAS_M, bool HAS_D, typename acc_t>
LOCALATTN_INLINE void backward_input_pixels_dense(acc_t* acc_row, const acc_t* gf, const acc_t* af,
                                                  const acc_t* mul, const acc_t* add, const Geom& g,
                                                  int64_t ky, int64_t x0) {
  using N = Native<acc_t, VW>;
  using V = typename N::V;
  static_assert(N::NV == 1, "one native vector per channel block");
  constexpr int64_t L = kBlock<acc_t>;
  V acc[P], xv[P];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    acc[p] = vload<V>(acc_row + (x0 + p) * L);
    xv[p] = vload<V>(gf + (x0 + g.k - 1 + p) * L);
  }
  for (int64_t kx = 0; kx < g.k; ++kx) {
    const int64_t t = ky * g.k + kx;
    V mv[1], dv[1];
    load_tap_ghost<HAS_M, HAS_D, 1, N::VL>(mv, dv, mul, add, t);
    const int64_t base = x0 + g.k - 1 - kx;
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) acc[p] += xv[p] * filter<HAS_M, HAS_D>(mv[0], dv[0], af[(base + p) * g.k + kx]);
#pragma GCC unroll 8
    for (int p = P - 1; p > 0; --p) xv[p] = xv[p - 1];
    if (kx + 1 < g.k) xv[0] = vload<V>(gf + (base - 1) * L);
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) vstore(acc_row + (x0 + p) * L, acc[p]);
}

template <int VW, bool HAS_M, bool HAS_D, typename acc_t>
LOCALATTN_INLINE void backward_input_block(acc_t* acc_row, const acc_t* gf, const acc_t* af,
                                           const acc_t* mul, const acc_t* add, const Geom& g,
                                           int64_t ky) {
  constexpr int P = kPixels<VW>;
  int64_t x = 0;
  if constexpr (Native<acc_t, VW>::NV == 1) {
    if (g.d == 1)
      for (; x + P <= g.w; x += P)
        backward_input_pixels_dense<VW, P, HAS_M, HAS_D>(acc_row, gf, af, mul, add, g, ky, x);
  }
  for (; x + P <= g.w; x += P) backward_input_pixels<VW, P, HAS_M, HAS_D>(acc_row, gf, af, mul, add, g, ky, x);
  for (; x < g.w; ++x) backward_input_pixels<VW, 1, HAS_M, HAS_D>(acc_row, gf, af, mul, add, g, ky, x);
}

template <typename T>
LOCALATTN_INLINE T* offset(T* p, int64_t n) {
  return p ? p + n : nullptr;
}

// Everything a task range of the three kernels reads and writes (null where a tensor is absent).
template <typename scalar_t, typename acc_t>
struct Args {
  using scalar_type = scalar_t;
  const Geom& g;
  int64_t band;                   // output rows per task of the forward and backward pass 1
  const scalar_t *values, *logits, *grad_out;
  int64_t gs[3];                  // grad_out strides (batch, row, column)
  const acc_t *mul, *add;         // load_ghost() blocks
  scalar_t *out, *grad_logits, *grad_values;
  acc_t *attn, *part_m, *part_d;  // backward scratch: softmax (B·Ho, Wo, G, kkp), partials (B·Ho, K², cvp)
};

// Forward, task (b, band of output rows). HAS_M / HAS_D / unit stride are template arguments so
// that the hot loops have no branches.
template <int VW, bool HAS_M, bool HAS_D, typename scalar_t, typename acc_t, typename S>
LOCALATTN_INLINE void forward_tasks(const Args<scalar_t, acc_t>& A, int64_t begin, int64_t end, S s) {
  constexpr int64_t L = kBlock<acc_t>;
  const Geom& g = A.g;
  Scratch<acc_t> attn(g.wo * g.kkp), acc(g.wo * L);
  std::vector<const acc_t*> rows(g.k);
  RowCache<acc_t> cache(g);
  for (int64_t task = begin; task < end; ++task) {
    const auto [b, i0, i1] = band_task(g, A.band, task);
    cache.clear();
    for (int64_t i = i0; i < i1; ++i) {
      if (i + 1 < i1) prefetch_row(g, A.logits, A.values, b, i + 1);
      for (int64_t head = 0; head < g.heads; ++head) {
        softmax_head<VW>(attn.data(), g.kkp, A.logits + b * g.ls[0] + i * g.ls[1], g, head);
        for (int64_t blk = 0; blk < g.nblk; ++blk) {
          const int64_t c0 = head * g.cg + blk * L, nval = std::min(L, g.cg - blk * L);
          const int64_t hb = head * g.nblk + blk;
          cache.window(rows.data(), A.values + b * g.xs[0], i, hb, c0, nval);
          scalar_t* out = A.out + (b * g.ho + i) * g.wo * g.cv + c0;
          const bool direct = std::is_same_v<scalar_t, acc_t> && nval == L;  // straight into the output
          forward_block<VW, HAS_M, HAS_D>(direct ? reinterpret_cast<acc_t*>(out) : acc.data(), direct ? g.cv : L,
                                          rows.data(), attn.data(), g.kkp, offset(A.mul, hb * g.kk * L),
                                          offset(A.add, hb * g.kk * L), g, s);
          if (!direct) store_block(out, g.cv, acc.data(), g.wo, nval);
        }
      }
    }
  }
}

// Pass 1 of the backward: softmax (kept in A.attn), grad of the logits, partial ghost sums per
// output row; task (b, band of output rows).
template <int VW, bool HAS_M, bool HAS_D, typename scalar_t, typename acc_t, typename S>
LOCALATTN_INLINE void backward_attn_tasks(const Args<scalar_t, acc_t>& A, int64_t begin, int64_t end, S s) {
  constexpr int64_t L = kBlock<acc_t>;
  const Geom& g = A.g;
  const int64_t wop = (g.wo + 15) / 16 * 16;  // grad_a (K², wop): tap-major, whole vectors of pixels
  Scratch<acc_t> gout(g.wo * L), grad_a(g.kk * wop);
  std::vector<const acc_t*> rows(g.k);
  RowCache<acc_t> cache(g);
  const int64_t a_step = g.heads * g.kkp;
  for (int64_t task = begin; task < end; ++task) {
    const auto [b, i0, i1] = band_task(g, A.band, task);
    cache.clear();
    for (int64_t i = i0; i < i1; ++i) {
      if (i + 1 < i1) {
        prefetch_row(g, A.logits, A.values, b, i + 1);
        prefetch_spans(A.grad_out + b * A.gs[0] + (i + 1) * A.gs[1], g.wo, A.gs[2], g.cv * sizeof(scalar_t));
      }
      const int64_t row = b * g.ho + i;
      for (int64_t head = 0; head < g.heads; ++head) {
        acc_t* attn = A.attn + (row * g.wo * g.heads + head) * g.kkp;
        softmax_head<VW>(attn, a_step, A.logits + b * g.ls[0] + i * g.ls[1], g, head);
        std::fill(grad_a.begin(), grad_a.end(), acc_t(0));
        for (int64_t blk = 0; blk < g.nblk; ++blk) {
          const int64_t c0 = head * g.cg + blk * L, nval = std::min(L, g.cg - blk * L);
          const int64_t hb = head * g.nblk + blk;
          cache.window(rows.data(), A.values + b * g.xs[0], i, hb, c0, nval);
          load_block(gout.data(), A.grad_out + b * A.gs[0] + i * A.gs[1] + c0, g.wo, A.gs[2], 1, nval);
          const int64_t part = row * g.kk * g.cvp + hb * L;  // (row, tap 0, block hb) of the partials
          backward_attn_block<VW, HAS_M, HAS_D>(grad_a.data(), wop, offset(A.part_m, part), offset(A.part_d, part),
                                                g.cvp, gout.data(), rows.data(), attn, a_step,
                                                offset(A.mul, hb * g.kk * L), g, s);
        }
        // softmax backward: grad_logit_k = a_k·(grad_a_k − Σ_k' a_k'·grad_a_k'); the dot products of
        // kDots pixels are summed side by side (each in tap order: one add chain each, overlapping)
        constexpr int64_t kDots = 4;
        for (int64_t j0 = 0; j0 < g.wo; j0 += kDots) {
          const int64_t n = std::min(kDots, g.wo - j0);
          acc_t dot[kDots] = {};
          for (int64_t t = 0; t < g.kk; ++t)
#pragma GCC unroll 4
            for (int64_t u = 0; u < kDots; ++u)
              if (u < n) dot[u] += attn[(j0 + u) * a_step + t] * grad_a[t * wop + j0 + u];
          for (int64_t u = 0; u < n; ++u) {
            const int64_t j = j0 + u;
            const acc_t* a = attn + j * a_step;
            const acc_t* ga = grad_a.data() + j;
            scalar_t* dst = A.grad_logits + ((row * g.wo + j) * g.heads + head) * g.kk;
            for (int64_t t = 0; t < g.kk; ++t) dst[t] = static_cast<scalar_t>(a[t] * (ga[t * wop] - dot[u]));
          }
        }
      }
    }
  }
}

// Pass 2: grad of the values; task (b, input row y) gathers the output rows i with i·s + (ky − r)·d = y.
// Per head and window row ky, A of row i at input resolution is built once for all channel blocks.
// (The stride comes from the geometry: a plain int64_t argument, one instantiation for every stride.)
template <int VW, bool HAS_M, bool HAS_D, typename scalar_t, typename acc_t>
LOCALATTN_INLINE void backward_input_tasks(const Args<scalar_t, acc_t>& A, int64_t begin, int64_t end, int64_t) {
  constexpr int64_t L = kBlock<acc_t>;
  const Geom& g = A.g;
  Scratch<acc_t> acc(g.nblk * g.w * L), gf(g.wp * L), af(g.wp * g.k);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t b = task / g.h, y = task % g.h;
    for (int64_t head = 0; head < g.heads; ++head) {
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
        const acc_t* arow = A.attn + (b * g.ho + i) * g.wo * g.heads * g.kkp + head * g.kkp + ky * g.k;
        for (int64_t j = 0; j < g.wo; ++j) {
          const acc_t* src = arow + j * g.heads * g.kkp;
          acc_t* dst = af.data() + (g.pad + j * g.s) * g.k;
          for (int64_t kx = 0; kx < g.k; ++kx) dst[kx] = src[kx];
        }
        for (int64_t blk = 0; blk < g.nblk; ++blk) {
          const int64_t c0 = head * g.cg + blk * L, nval = std::min(L, g.cg - blk * L);
          const int64_t gb = (head * g.nblk + blk) * g.kk * L;
          load_block(gf.data() + g.pad * L, A.grad_out + b * A.gs[0] + i * A.gs[1] + c0, g.wo, A.gs[2], g.s, nval);
          backward_input_block<VW, HAS_M, HAS_D>(acc.data() + blk * g.w * L, gf.data(), af.data(),
                                                 offset(A.mul, gb), offset(A.add, gb), g, ky);
        }
      }
      for (int64_t blk = 0; blk < g.nblk; ++blk) {
        const int64_t c0 = head * g.cg + blk * L, nval = std::min(L, g.cg - blk * L);
        store_block(A.grad_values + task * g.w * g.cv + c0, g.cv, acc.data() + blk * g.w * L, g.w, nval);
      }
    }
  }
}

// The ghost-case specialisations of one task-range function for one vector width and stride
// argument S (kUnit: stride 1, contiguous loads; a.g.s: any stride).
#define ELSA_GHOST_CASES(NAME, VW, S)                                                          \
  if (a.mul && a.add) NAME<VW, true, true>(a, begin, end, S);                                  \
  else if (a.mul) NAME<VW, true, false>(a, begin, end, S);                                     \
  else if (a.add) NAME<VW, false, true>(a, begin, end, S);                                     \
  else NAME<VW, false, false>(a, begin, end, S);

// Runtime ISA dispatch (common.h `cpu_isa()`, capped by `_set_cpu_isa` in tests): each task-range
// function is compiled for AVX-512 (x86-64-v4, zmm), AVX2+FMA (x86-64-v3, ymm) and the baseline
// ISA (xmm); the hot loops are inlined into each variant. What is compiled is kept to what the
// models run, within reach of the CI build time: AVX-512 has the stride-1 float32 / bfloat16 kernels
// (the ELSA-Swin layers); float16 and strided maps run the AVX2 kernels on an AVX-512 CPU; the
// baseline (CPUs without AVX2) has no stride-1 specialisation; float64 (the reference dtype of
// gradcheck and the tests) runs the baseline kernels only.
#if defined(__x86_64__) && defined(__GNUC__)
#define ELSA_ISA_VARIANTS(NAME, STRIDED)                                                        \
  template <typename scalar_t, typename acc_t>                                                  \
  __attribute__((target("arch=x86-64-v4,prefer-vector-width=512"))) void NAME##_avx512(        \
      const Args<scalar_t, acc_t>& a, int64_t begin, int64_t end) {                            \
    ELSA_GHOST_CASES(NAME, 64, kUnit)                                                           \
  }                                                                                             \
  template <typename scalar_t, typename acc_t>                                                  \
  __attribute__((target("arch=x86-64-v3"))) void NAME##_avx2(const Args<scalar_t, acc_t>& a,   \
                                                              int64_t begin, int64_t end) {     \
    if constexpr (STRIDED) if (a.g.s == 1) {                                                    \
      ELSA_GHOST_CASES(NAME, 32, kUnit)                                                         \
      return;                                                                                   \
    }                                                                                           \
    ELSA_GHOST_CASES(NAME, 32, a.g.s)                                                           \
  }                                                                                             \
  template <typename scalar_t, typename acc_t>                                                  \
  void NAME##_baseline(const Args<scalar_t, acc_t>& a, int64_t begin, int64_t end) {           \
    ELSA_GHOST_CASES(NAME, 16, a.g.s)                                                           \
  }
#define ELSA_RUN_ISA(NAME, isa, a, begin, end)                                                  \
  do {                                                                                         \
    using scalar_type = typename std::decay_t<decltype(a)>::scalar_type;                       \
    if constexpr (std::is_same_v<scalar_type, double>)                                         \
      NAME##_baseline(a, begin, end);                                                          \
    else if constexpr (std::is_same_v<scalar_type, at::Half>)                                  \
      isa == CpuIsa::kBaseline ? NAME##_baseline(a, begin, end) : NAME##_avx2(a, begin, end);  \
    else if (isa == CpuIsa::kAvx512 && a.g.s == 1)                                             \
      NAME##_avx512(a, begin, end);                                                            \
    else if (isa != CpuIsa::kBaseline)                                                         \
      NAME##_avx2(a, begin, end);                                                              \
    else                                                                                       \
      NAME##_baseline(a, begin, end);                                                          \
  } while (0)
#else
#define ELSA_ISA_VARIANTS(NAME, STRIDED)                                                        \
  template <typename scalar_t, typename acc_t>                                                  \
  void NAME##_baseline(const Args<scalar_t, acc_t>& a, int64_t begin, int64_t end) {           \
    ELSA_GHOST_CASES(NAME, 16, a.g.s)                                                           \
  }
#define ELSA_RUN_ISA(NAME, isa, a, begin, end) NAME##_baseline(a, begin, end)
#endif
// STRIDED: the function has a stride-1 specialisation (its stride argument is a template type).
ELSA_ISA_VARIANTS(forward_tasks, true)
ELSA_ISA_VARIANTS(backward_attn_tasks, true)
ELSA_ISA_VARIANTS(backward_input_tasks, false)

inline int64_t lanes_for(at::ScalarType type) { return type == at::kDouble ? 8 : 16; }

}  // namespace localattn::cpu::elsa
