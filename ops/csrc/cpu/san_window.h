// The SAN aggregation shared by the fused ops (san_fused.cpp) and the stride-1 centred-reflect case of
// `localattn::aggregation` (san.cpp): register-tiled over 16-pixel tiles and all K² taps, value channels
// sharing a weight channel a few at a time; and the runtime ISA dispatch of their task loops (AVX-512
// (x86-64-v4), AVX2+FMA (x86-64-v3) or the baseline, the best one the CPU supports, capped by
// `_set_cpu_isa`, which the tests use to check every compiled path on one machine).
#pragma once

#include "cpu/common.h"

namespace localattn::cpu::san {

constexpr int64_t kLanes = 16;       // pixels per tile (one zmm / two ymm of float)
constexpr int64_t kBandPixels = 48;  // pixels a band task covers at least
constexpr int kSharedChannels = 4;   // value channels sharing a weight channel aggregated at once

// Window and aggregation geometry (stride 1, reflect borders, padding p = d·(K−1)/2).
struct SanWindow {
  int64_t n, c, cw, h, w, k, kk, d, p;
  int64_t wpad() const { return (w + kLanes - 1) / kLanes * kLanes; }  // row rounded up to tiles
  int64_t wrow() const { return wpad() + 2 * p; }                       // padded row (+ tile slack)
};

// A window whose tasks are bands of output rows of one image, each covering at least kBandPixels
// pixels (so 7- and 14-pixel rows share 16-pixel tiles), with a per-task (C_w·K² × band) weights buffer.
struct BandedWindow : SanWindow {
  int64_t band;  // output rows per task
  void set_band() { band = std::min(std::max<int64_t>(h, 1), (kBandPixels + w - 1) / std::max<int64_t>(w, 1)); }
  int64_t bands() const { return (h + band - 1) / band; }
  int64_t band_tasks() const { return n * bands(); }
  struct Rows {
    int64_t n, h0, h1;  // image and output rows [h0, h1)
  };
  Rows task_rows(int64_t task) const {
    const int64_t h0 = task % bands() * band;
    return {task / bands(), h0, std::min(h0 + band, h)};
  }
  int64_t band_stride() const {  // row stride of the weights buffer: the band's tiles + a row of slack
    return (band * w + kLanes - 1) / kLanes * kLanes + kLanes;
  }
};

// Rows h0 − p .. h1 + p − 1 of one (H, W) value plane, reflected, as padded rows of wrow (tile slack
// zero) at dst: the rows output rows [h0, h1) read.
template <typename scalar_t, typename acc_t>
LOCALATTN_INLINE void load_window_band(acc_t* dst, const SanWindow& g, const scalar_t* plane, int64_t h0,
                                       int64_t h1) {
  const int64_t wrow = g.wrow();
  for (int64_t y = h0 - g.p; y < h1 + g.p; ++y) {
    acc_t* row = dst + (y - h0 + g.p) * wrow;
    load_padded_row(row, plane + reflect_index(y, g.h) * g.w, g.w, g.p, true);
    std::fill(row + g.w + 2 * g.p, row + wrow, acc_t(0));
  }
}

// Aggregation of output rows [h0, h1) of image n, every channel:
//   out[c][h][x] = Σ_t A(c mod C_w, t, h)[x] · value~[c][h + a·d − p][x + b·d − p],   t = a·K + b,
// A(w, t, h) = attn + w·channel_stride + t·tap_stride + (h − h0)·row_stride, read in 16-lane tiles over
// wpad lanes (lanes past the row are computed and not stored). The channels sharing a weight channel
// (c = w, w + C_w, ...) go CB at a time: one load of a tap's weights feeds CB multiply-adds, and each
// tile is accumulated over all taps in registers. The value rows a band needs are loaded once per
// channel, reflected, into vrows (CB × (band + 2p) rows of wrow).
template <int CB, typename scalar_t, typename acc_t>
LOCALATTN_INLINE void aggregate_channels(const SanWindow& g, const scalar_t* value, scalar_t* out, int64_t n,
                                         int64_t h0, int64_t h1, const acc_t* weights, int64_t tap_stride,
                                         int64_t row_stride, int64_t c0, acc_t* vrows) {
  const int64_t wrow = g.wrow(), plane = g.h * g.w, rows = h1 - h0 + 2 * g.p;
  for (int i = 0; i < CB; ++i)
    load_window_band(vrows + i * rows * wrow, g, value + (n * g.c + c0 + i * g.cw) * plane, h0, h1);
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t x0 = 0; x0 < g.w; x0 += kLanes) {
      acc_t acc[CB][kLanes] = {};
      for (int64_t t = 0; t < g.kk; ++t) {
        const acc_t* wt = weights + t * tap_stride + (h - h0) * row_stride + x0;
        const acc_t* row = vrows + (h - h0 + (t / g.k) * g.d) * wrow + (t % g.k) * g.d + x0;
        for (int i = 0; i < CB; ++i) {
          const acc_t* ri = row + i * rows * wrow;
#pragma omp simd
          for (int x = 0; x < kLanes; ++x) acc[i][x] += wt[x] * ri[x];
        }
      }
      const int64_t lanes = std::min(kLanes, g.w - x0);
      for (int i = 0; i < CB; ++i) {
        scalar_t* dst = out + (n * g.c + c0 + i * g.cw) * plane + h * g.w + x0;
        for (int64_t x = 0; x < lanes; ++x) dst[x] = static_cast<scalar_t>(acc[i][x]);
      }
    }
  }
}

template <typename scalar_t, typename acc_t>
LOCALATTN_INLINE void aggregate_rows(const SanWindow& g, const scalar_t* value, scalar_t* out, int64_t n,
                                     int64_t h0, int64_t h1, const acc_t* attn, int64_t channel_stride,
                                     int64_t tap_stride, int64_t row_stride, acc_t* vrows) {
  const int64_t sharing = g.c / g.cw;
  for (int64_t w = 0; w < g.cw; ++w) {
    const acc_t* weights = attn + w * channel_stride;
    int64_t i = 0;
    for (; i + kSharedChannels <= sharing; i += kSharedChannels)
      aggregate_channels<kSharedChannels>(g, value, out, n, h0, h1, weights, tap_stride, row_stride,
                                          w + i * g.cw, vrows);
    for (; i < sharing; ++i)
      aggregate_channels<1>(g, value, out, n, h0, h1, weights, tap_stride, row_stride, w + i * g.cw, vrows);
  }
}

// tasks.run<MB>(begin, end) compiled for one ISA (MB = rows of the register-blocked 1×1 layers).
#if defined(__x86_64__) && defined(__GNUC__)
#define LOCALATTN_HAS_ISA_CLONES 1
template <typename Tasks>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,prefer-vector-width=512")))
void run_avx512(const Tasks& tasks, int64_t begin, int64_t end) {
  tasks.template run<8>(begin, end);
}

template <typename Tasks>
__attribute__((target("avx2,fma,f16c")))
void run_avx2(const Tasks& tasks, int64_t begin, int64_t end) {
  tasks.template run<4>(begin, end);
}
#endif

template <typename Tasks>
void run_baseline(const Tasks& tasks, int64_t begin, int64_t end) {
  tasks.template run<4>(begin, end);
}

// All tasks over the threads, each chunk on the best ISA this CPU has.
template <typename Tasks>
void run_tasks(const Tasks& tasks) {
  const CpuIsa isa = cpu_isa();
  at::parallel_for(0, tasks.count(), 1, [&](int64_t begin, int64_t end) {
#ifdef LOCALATTN_HAS_ISA_CLONES
    if (isa == CpuIsa::kAvx512) return run_avx512(tasks, begin, end);
    if (isa == CpuIsa::kAvx2) return run_avx2(tasks, begin, end);
#endif
    run_baseline(tasks, begin, end);
  });
}

// Arguments of the shared aggregation the ops check the same way.
inline void check_sharing_and_map(const SanWindow& g, const char* op) {
  TORCH_CHECK_VALUE(g.cw > 0 && g.c % g.cw == 0, op, ": weight channels C_w = ", g.cw,
                    " must divide the value channels C = ", g.c);
  TORCH_CHECK_VALUE(g.h * g.w == 0 || (g.p < g.h && g.p < g.w), op, ": reflect padding ", g.p,
                    " needs a map of at least ", g.p + 1, "x", g.p + 1, ", got ", g.h, "x", g.w);
}

}  // namespace localattn::cpu::san
