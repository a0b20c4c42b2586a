// SAN operators on CPU: aggregation and subtraction2 with zero or reflect padding
// (spec: shared/spec/san.md §1.1–1.5). Neighbour of output (h, w) at tap t = (a, b):
// (h·s − p + a·d, w·s − p + b·d); in a buffer padded by p on each side that is (h·s + a·d, w·s + b·d).
//
// aggregation   Y[n,c,h,w] = Σ_t W[n, c mod C_w, t, h·W_o + w] · X~[n,c,neighbour t]
//   stride 1 with the centred reflect window (what the SAN layers run), register-tiled on 16-pixel tiles:
//   forward, task (n, band of output rows), the aggregation of cpu/san_window.h on the band's weights;
//   from 5×5 windows on, weight gradient, task (n, band), and input gradient, task (n, weight channel,
//   four channels sharing it), gathered into private padded planes, reflection fold, crop;
//   other windows: forward and weight gradient, task (n, output row h), padded window rows loaded once per
//   channel; input gradient, task (n, c), scatter into a private padded plane, reflection fold, crop.
// subtraction2  D[n,c,t,l] = X1[n,c,h·s,w·s] − X~2[n,c,neighbour t]   (requires 2p = d(k − 1))
//   forward and backward: task (n, c) over a padded plane.
// Every output element is written by one task in a fixed order: bit-equal for any thread count.
#include "cpu/san_window.h"

namespace localattn::cpu {
namespace {

struct SanShape {
  int64_t n, c, h, w, k, kk, s, p, d, ho, wo, l, hp, wp;
  bool reflect;
};

int64_t san_output_size(int64_t size, const SanShape& g, const char* op, const char* axis) {
  const int64_t span = size + 2 * g.p - g.d * (g.k - 1) - 1;
  const int64_t out = span >= 0 ? span / g.s + 1 : 0;
  TORCH_CHECK_VALUE(out > 0 || size == 0, op, ": input ", axis, " ", size,
                    " is too small for kernel_size ", g.k, ", dilation ", g.d, " and padding ", g.p);
  return out;
}

SanShape san_shape(at::IntArrayRef sizes, int64_t k, int64_t s, int64_t p, int64_t d, bool reflect,
                   const char* op) {
  check_window(k, s, d, op);
  TORCH_CHECK_VALUE(p >= 0, op, ": padding must be >= 0, got ", p);
  TORCH_CHECK_VALUE(sizes.size() == 4, op, ": input must be 4-D (N, C, H, W), got ", sizes);
  SanShape g{sizes[0], sizes[1], sizes[2], sizes[3], k, k * k, s, p, d, 0, 0, 0, 0, 0, reflect};
  TORCH_CHECK_VALUE(!reflect || p == 0 || (p < g.h && p < g.w), op, ": reflect padding ", p,
                    " needs an input of at least ", p + 1, "x", p + 1, ", got ", g.h, "x", g.w);
  g.ho = san_output_size(g.h, g, op, "height");
  g.wo = san_output_size(g.w, g, op, "width");
  g.l = g.ho * g.wo;
  g.hp = g.h + 2 * p;
  g.wp = g.w + 2 * p;
  return g;
}

void check_same_padding(const SanShape& g, const char* op) {
  TORCH_CHECK_VALUE(2 * g.p == g.d * (g.k - 1), op,
                    ": subtraction needs the centred window 2*padding == dilation*(kernel_size-1), got "
                    "padding ",
                    g.p, ", dilation ", g.d, ", kernel_size ", g.k);
}

// Loads the k window rows of output row h of one padded channel plane; null where zero padding.
template <typename acc_t, typename scalar_t>
LOCALATTN_SIMD_CLONES void load_window_rows(const acc_t** rows, acc_t* buffer, const scalar_t* plane,
                                           const SanShape& g, int64_t h) {
  for (int64_t a = 0; a < g.k; ++a) {
    int64_t y = h * g.s - g.p + a * g.d;
    if (y < 0 || y >= g.h) {
      if (!g.reflect) {
        rows[a] = nullptr;
        continue;
      }
      y = reflect_index(y, g.h);
    }
    load_padded_row(buffer + a * g.wp, plane + y * g.w, g.w, g.p, g.reflect);
    rows[a] = buffer + a * g.wp;
  }
}

// The whole padded plane (hp x wp) of one channel; rows outside the image are zeros or reflected.
template <typename acc_t, typename scalar_t>
LOCALATTN_SIMD_CLONES void load_padded_plane(acc_t* dst, const scalar_t* plane, const SanShape& g) {
  for (int64_t u = 0; u < g.hp; ++u) {
    int64_t y = u - g.p;
    if (y < 0 || y >= g.h) {
      if (!g.reflect) {
        std::fill(dst + u * g.wp, dst + (u + 1) * g.wp, acc_t(0));
        continue;
      }
      y = reflect_index(y, g.h);
    }
    load_padded_row(dst + u * g.wp, plane + y * g.w, g.w, g.p, g.reflect);
  }
}

// Writes the interior of a padded gradient plane (after folding reflected borders) times `sign`.
template <typename acc_t, typename scalar_t>
void store_plane_gradient(scalar_t* dst, acc_t* plane, const SanShape& g, acc_t sign) {
  if (g.reflect) fold_reflect(plane, g.h, g.w, g.p);
  for (int64_t y = 0; y < g.h; ++y) {
    const acc_t* src = plane + (y + g.p) * g.wp + g.p;
    for (int64_t x = 0; x < g.w; ++x) dst[y * g.w + x] = static_cast<scalar_t>(sign * src[x]);
  }
}

// ---------------------------------------------------------------------------------------------
// Hot loops (vectorised; S is kUnit for stride 1)

// acc[j] += w[j]·x[j·s]
template <typename acc_t, typename S>
LOCALATTN_INLINE void product_fma(acc_t* __restrict acc, const acc_t* __restrict w,
                                  const acc_t* __restrict x, int64_t n, S s) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) acc[j] += w[j] * x[j * s];
}

// out[j·s] += w[j]·g[j]
template <typename acc_t, typename S>
LOCALATTN_INLINE void scatter_product(acc_t* __restrict out, const acc_t* __restrict w,
                                      const acc_t* __restrict gr, int64_t n, S s) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j * s] += w[j] * gr[j];
}

// o[j] = centre[j] − x[j·s]
template <typename acc_t, typename scalar_t, typename S>
LOCALATTN_INLINE void difference(scalar_t* __restrict o, const acc_t* __restrict centre,
                                 const acc_t* __restrict x, int64_t n, S s) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) o[j] = static_cast<scalar_t>(centre[j] - x[j * s]);
}

// centre[j] += g[j]; neighbour[j·s] += g[j]
template <typename acc_t, typename S>
LOCALATTN_INLINE void accumulate_both(acc_t* __restrict centre, acc_t* __restrict neighbour,
                                      const acc_t* __restrict gr, int64_t n, S s) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    centre[j] += gr[j];
    neighbour[j * s] += gr[j];
  }
}

// Aggregation, one channel and output row: acc[j] = Σ_t w_t[j]·x~_a[j·s + b·d].
template <typename acc_t>
LOCALATTN_SIMD_CLONES void aggregate_row(acc_t* acc, const acc_t* const* rows, const acc_t* w,
                                         int64_t w_stride, const SanShape& g) {
  std::fill(acc, acc + g.wo, acc_t(0));
  for (int64_t a = 0; a < g.k; ++a) {
    if (!rows[a]) continue;
    for (int64_t b = 0; b < g.k; ++b) {
      const acc_t* wr = w + (a * g.k + b) * w_stride;
      if (g.s == 1)
        product_fma(acc, wr, rows[a] + b * g.d, g.wo, kUnit);
      else
        product_fma(acc, wr, rows[a] + b * g.d, g.wo, g.s);
    }
  }
}

// Aggregation weight gradient, one channel and output row: grad_w[t][j] += g[j]·x~_a[j·s + b·d].
template <typename acc_t>
LOCALATTN_SIMD_CLONES void weight_grad_row(acc_t* grad_w, const acc_t* gr, const acc_t* const* rows,
                                           const SanShape& g) {
  for (int64_t a = 0; a < g.k; ++a) {
    if (!rows[a]) continue;
    for (int64_t b = 0; b < g.k; ++b) {
      acc_t* dst = grad_w + (a * g.k + b) * g.wo;
      if (g.s == 1)
        product_fma(dst, gr, rows[a] + b * g.d, g.wo, kUnit);
      else
        product_fma(dst, gr, rows[a] + b * g.d, g.wo, g.s);
    }
  }
}

// Aggregation input gradient, one channel and output row h, into the padded plane:
// plane[h·s + a·d][j·s + b·d] += w_t[j]·g[j] (w: the K² weight rows of h, stride w_stride).
template <typename acc_t>
LOCALATTN_SIMD_CLONES void input_grad_row(acc_t* plane, const acc_t* gr, const acc_t* w,
                                          int64_t w_stride, int64_t h, const SanShape& g) {
  for (int64_t a = 0; a < g.k; ++a) {
    const int64_t u = h * g.s + a * g.d;
    if (!g.reflect && (u < g.p || u >= g.p + g.h)) continue;  // dropped by zero padding
    for (int64_t b = 0; b < g.k; ++b) {
      acc_t* dst = plane + u * g.wp + b * g.d;
      const acc_t* wr = w + (a * g.k + b) * w_stride;
      if (g.s == 1)
        scatter_product(dst, wr, gr, g.wo, kUnit);
      else
        scatter_product(dst, wr, gr, g.wo, g.s);
    }
  }
}

// Subtraction2 of one channel: out[t][h][w] = centre[h][w] − plane[h·s + a·d][w·s + b·d].
template <typename acc_t, typename scalar_t>
LOCALATTN_SIMD_CLONES void subtraction_plane(scalar_t* out, const acc_t* centre, const acc_t* plane,
                                             const SanShape& g) {
  for (int64_t t = 0; t < g.kk; ++t) {
    const int64_t a = t / g.k, b = t % g.k;
    for (int64_t h = 0; h < g.ho; ++h) {
      scalar_t* o = out + t * g.l + h * g.wo;
      const acc_t* x = plane + (h * g.s + a * g.d) * g.wp + b * g.d;
      if (g.s == 1)
        difference(o, centre + h * g.wo, x, g.wo, kUnit);
      else
        difference(o, centre + h * g.wo, x, g.wo, g.s);
    }
  }
}

// Subtraction2 backward of one channel: centre[l] += Σ_t G[t][l]; plane[nb t of l] += G[t][l].
template <typename acc_t, typename scalar_t>
LOCALATTN_SIMD_CLONES void subtraction_grad_plane(acc_t* centre, acc_t* plane, const scalar_t* gout,
                                                  acc_t* row_buf, const SanShape& g) {
  for (int64_t t = 0; t < g.kk; ++t) {
    const int64_t a = t / g.k, b = t % g.k;
    for (int64_t h = 0; h < g.ho; ++h) {
      const acc_t* gr = as_acc(gout + t * g.l + h * g.wo, g.wo, row_buf);
      acc_t* x = plane + (h * g.s + a * g.d) * g.wp + b * g.d;
      if (g.s == 1)
        accumulate_both(centre + h * g.wo, x, gr, g.wo, kUnit);
      else
        accumulate_both(centre + h * g.wo, x, gr, g.wo, g.s);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Kernels

SanShape check_aggregation(const at::Tensor& input, const at::Tensor& weight, int64_t k, int64_t s,
                           int64_t p, int64_t d, bool reflect, const char* op) {
  const SanShape g = san_shape(input.sizes(), k, s, p, d, reflect, op);
  check_cpu_float(input, op, "input", input);
  check_cpu_float(weight, op, "weight", input);
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(0) == g.n && weight.size(2) == g.kk &&
                        weight.size(3) == g.l,
                    op, ": weight must have shape (N, C_w, kernel_size^2, H_o*W_o) = (", g.n,
                    ", C_w, ", g.kk, ", ", g.l, "), got ", weight.sizes());
  TORCH_CHECK_VALUE(weight.size(1) > 0 && g.c % weight.size(1) == 0, op,
                    ": weight channels C_w must divide the input channels ", g.c, ", got ",
                    weight.size(1));
  return g;
}

template <typename scalar_t>
void aggregation_forward_kernel(const SanShape& g, const at::Tensor& x, const at::Tensor& wt,
                                at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cw = wt.size(1);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wtp = wt.const_data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  at::parallel_for(0, g.n * g.ho, grain(g.c * g.kk * g.wo), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> rows_buf(g.k * g.wp), w_buf(cw * g.kk * g.wo), acc(g.wo);
    std::vector<const acc_t*> rows(g.k);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.ho, h = task % g.ho;
      int64_t w_stride;  // between the rows (j, t) of weight[n] for output row h
      const acc_t* wb = as_acc_rows(wtp + n * cw * g.kk * g.l + h * g.wo, cw * g.kk, g.l, g.wo,
                                    w_buf.data(), w_stride);
      for (int64_t c = 0; c < g.c; ++c) {
        const int64_t nc = n * g.c + c;
        load_window_rows(rows.data(), rows_buf.data(), xp + nc * g.h * g.w, g, h);
        aggregate_row(acc.data(), rows.data(), wb + (c % cw) * g.kk * w_stride, w_stride, g);
        scalar_t* dst = op + nc * g.l + h * g.wo;
        for (int64_t j = 0; j < g.wo; ++j) dst[j] = static_cast<scalar_t>(acc[j]);
      }
    }
  });
}

// The stride-1 centred reflect case, task = a band of output rows of one image: the band's weights
// (C_w·K² rows of band pixels, contiguous in the (N, C_w, K², L) tensor) are converted into a per-thread
// buffer with tile slack, which the shared register-tiled aggregation reads.
template <typename scalar_t, typename acc_t>
struct AggregationForwardTasks {
  const san::BandedWindow& g;
  const scalar_t *value, *weight;
  scalar_t* out;

  int64_t count() const { return g.band_tasks(); }

  template <int>
  LOCALATTN_INLINE void run(int64_t begin, int64_t end) const {
    const int64_t zs = g.band_stride(), plane = g.h * g.w;
    // z: zero-initialised, so the slack lanes the aggregation reads past a band are finite.
    std::vector<acc_t> z(g.cw * g.kk * zs), vrows(san::kSharedChannels * (g.band + 2 * g.p) * g.wrow());
    for (int64_t task = begin; task < end; ++task) {
      const auto [n, h0, h1] = g.task_rows(task);
      const int64_t pixels = (h1 - h0) * g.w;
      for (int64_t jt = 0; jt < g.cw * g.kk; ++jt) {
        const scalar_t* src = weight + (n * g.cw * g.kk + jt) * plane + h0 * g.w;
        acc_t* dst = z.data() + jt * zs;
        for (int64_t x = 0; x < pixels; ++x) dst[x] = static_cast<acc_t>(src[x]);
      }
      san::aggregate_rows(g, value, out, n, h0, h1, z.data(), g.kk * zs, zs, g.w, vrows.data());
    }
  }
};

// Its weight gradient, task = a band of output rows of one image: for each weight channel j, the
// reflect-padded value rows and the output-gradient rows of the channels sharing it are loaded once,
// then grad_w[j][t][h][x] = Σ_{c ≡ j} value~[c][h + a·d − p][x + b·d − p] · grad_out[c][h][x] runs on
// 16-pixel tiles, kGradTaps taps at a time in registers (one load of grad_out feeds them all).
constexpr int kGradTaps = 4;
// The tiled gradients pay off from 5×5 windows on (3×3 at SAN10's 112² stage: 0.84× the row kernels).
constexpr int64_t kTiledGradMinKernel = 5;

template <typename scalar_t, typename acc_t>
struct AggregationWeightGradTasks {
  const san::BandedWindow& g;
  const scalar_t *value, *grad_out;
  scalar_t* grad_weight;

  int64_t count() const { return g.band_tasks(); }

  // Taps t0..t0+TB−1 of output row h (band row r) for the tile at x0.
  template <int TB>
  LOCALATTN_INLINE void tap_tile(const acc_t* vrows, const acc_t* grows, int64_t sharing, int64_t rows,
                                 int64_t r, int64_t x0, int64_t t0, acc_t (*acc)[san::kLanes]) const {
    const int64_t wrow = g.wrow(), wpad = g.wpad();
    for (int q = 0; q < TB; ++q)
      for (int x = 0; x < san::kLanes; ++x) acc[q][x] = acc_t(0);
    for (int64_t i = 0; i < sharing; ++i) {
      const acc_t* gi = grows + (i * g.band + r) * wpad + x0;
      for (int q = 0; q < TB; ++q) {
        const int64_t t = t0 + q;
        const acc_t* vi = vrows + (i * rows + r + (t / g.k) * g.d) * wrow + (t % g.k) * g.d + x0;
#pragma omp simd
        for (int x = 0; x < san::kLanes; ++x) acc[q][x] += vi[x] * gi[x];
      }
    }
  }

  template <int>
  LOCALATTN_INLINE void run(int64_t begin, int64_t end) const {
    const int64_t sharing = g.c / g.cw, wrow = g.wrow(), wpad = g.wpad(), plane = g.h * g.w;
    std::vector<acc_t> vrows(sharing * (g.band + 2 * g.p) * wrow), grows(sharing * g.band * wpad);
    acc_t acc[kGradTaps][san::kLanes];
    for (int64_t task = begin; task < end; ++task) {
      const auto [n, h0, h1] = g.task_rows(task);
      const int64_t rows = h1 - h0 + 2 * g.p;
      for (int64_t j = 0; j < g.cw; ++j) {
        for (int64_t i = 0; i < sharing; ++i) {
          const int64_t nc = n * g.c + j + i * g.cw;
          san::load_window_band(vrows.data() + i * rows * wrow, g, value + nc * plane, h0, h1);
          for (int64_t h = h0; h < h1; ++h) {
            acc_t* dst = grows.data() + (i * g.band + h - h0) * wpad;
            load_padded_row(dst, grad_out + nc * plane + h * g.w, g.w, 0, false);
            std::fill(dst + g.w, dst + wpad, acc_t(0));
          }
        }
        for (int64_t h = h0; h < h1; ++h) {
          for (int64_t x0 = 0; x0 < g.w; x0 += san::kLanes) {
            const int64_t lanes = std::min(san::kLanes, g.w - x0);
            scalar_t* dst = grad_weight + (n * g.cw + j) * g.kk * plane + h * g.w + x0;
            auto store = [&](int64_t t0, int tb) {
              for (int q = 0; q < tb; ++q) {
                scalar_t* d = dst + (t0 + q) * plane;
                if (lanes == san::kLanes)  // a whole tile: vector stores
                  for (int x = 0; x < san::kLanes; ++x) d[x] = static_cast<scalar_t>(acc[q][x]);
                else
                  for (int64_t x = 0; x < lanes; ++x) d[x] = static_cast<scalar_t>(acc[q][x]);
              }
            };
            int64_t t0 = 0;
            for (; t0 + kGradTaps <= g.kk; t0 += kGradTaps) {
              tap_tile<kGradTaps>(vrows.data(), grows.data(), sharing, rows, h - h0, x0, t0, acc);
              store(t0, kGradTaps);
            }
            for (; t0 < g.kk; ++t0) {
              tap_tile<1>(vrows.data(), grows.data(), sharing, rows, h - h0, x0, t0, acc);
              store(t0, 1);
            }
          }
        }
      }
    }
  }
};

// Its input gradient, task = (image, weight channel j, up to kSharedChannels channels sharing j): the
// padded gradient plane of each channel gathers, per product row h and window row a, the K taps
// Σ_b W[j][a·K + b][h][v − b·d] · grad_out[c][h][v − b·d] over 16-column tiles of padded row h + a·d (one
// load of a weight row feeds every channel of the task); then the reflected borders fold back.
template <typename scalar_t, typename acc_t>
struct AggregationInputGradTasks {
  const san::BandedWindow& g;
  const SanShape& shape;
  const scalar_t *weight, *grad_out;
  scalar_t* grad_input;

  int64_t chunks() const { return (g.c / g.cw + san::kSharedChannels - 1) / san::kSharedChannels; }
  int64_t count() const { return g.n * g.cw * chunks(); }

  template <int CB>
  LOCALATTN_INLINE void gather_rows(acc_t* planes, const acc_t* wrows, const acc_t* grows, int64_t h) const {
    const int64_t wp = g.w + 2 * g.p, wq = wp + 2 * g.p + san::kLanes, hw = (g.h + 2 * g.p) * wp;
    for (int64_t a = 0; a < g.k; ++a) {
      acc_t* prow = planes + (h + a * g.d) * wp;
      for (int64_t v0 = 0; v0 < wp; v0 += san::kLanes) {
        acc_t acc[CB][san::kLanes] = {};
        for (int64_t b = 0; b < g.k; ++b) {
          const int64_t off = v0 - b * g.d + 2 * g.p;  // buffer column of product column v0 − b·d
          const acc_t* wr = wrows + (a * g.k + b) * wq + off;
          for (int i = 0; i < CB; ++i) {
            const acc_t* gi = grows + i * wq + off;
#pragma omp simd
            for (int x = 0; x < san::kLanes; ++x) acc[i][x] += wr[x] * gi[x];
          }
        }
        const int64_t lanes = std::min(san::kLanes, wp - v0);
        for (int i = 0; i < CB; ++i) {
          acc_t* d = prow + i * hw + v0;
          if (lanes == san::kLanes)  // a whole tile: vector adds
#pragma omp simd
            for (int x = 0; x < san::kLanes; ++x) d[x] += acc[i][x];
          else
            for (int64_t x = 0; x < lanes; ++x) d[x] += acc[i][x];
        }
      }
    }
  }

  template <int>
  LOCALATTN_INLINE void run(int64_t begin, int64_t end) const {
    const int64_t sharing = g.c / g.cw, plane = g.h * g.w, wp = g.w + 2 * g.p;
    const int64_t wq = wp + 2 * g.p + san::kLanes, hw = (g.h + 2 * g.p) * wp;
    // Rows of products are zero outside [0, W): weight and gradient rows at column offset 2p.
    std::vector<acc_t> planes(san::kSharedChannels * hw), wrows(g.kk * wq, acc_t(0)),
        grows(san::kSharedChannels * wq, acc_t(0));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / (g.cw * chunks()), j = task / chunks() % g.cw;
      const int64_t i0 = task % chunks() * san::kSharedChannels;
      const int64_t cb = std::min<int64_t>(san::kSharedChannels, sharing - i0);
      std::fill(planes.begin(), planes.end(), acc_t(0));
      for (int64_t h = 0; h < g.h; ++h) {
        for (int64_t t = 0; t < g.kk; ++t)
          load_padded_row(wrows.data() + t * wq + 2 * g.p, weight + ((n * g.cw + j) * g.kk + t) * plane + h * g.w,
                          g.w, 0, false);
        for (int64_t i = 0; i < cb; ++i)
          load_padded_row(grows.data() + i * wq + 2 * g.p, grad_out + (n * g.c + j + (i0 + i) * g.cw) * plane + h * g.w,
                          g.w, 0, false);
        if (cb == san::kSharedChannels)
          gather_rows<san::kSharedChannels>(planes.data(), wrows.data(), grows.data(), h);
        else
          for (int64_t i = 0; i < cb; ++i)
            gather_rows<1>(planes.data() + i * hw, wrows.data(), grows.data() + i * wq, h);
      }
      for (int64_t i = 0; i < cb; ++i)
        store_plane_gradient(grad_input + (n * g.c + j + (i0 + i) * g.cw) * plane, planes.data() + i * hw, shape,
                             acc_t(1));
    }
  }
};

template <typename scalar_t>
void aggregation_backward_kernel(const SanShape& g, const at::Tensor& go, const at::Tensor& x,
                                 const at::Tensor& wt, at::Tensor& grad_x, at::Tensor& grad_w) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cw = wt.size(1), groups = g.c / cw;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wtp = wt.const_data_ptr<scalar_t>();
  const scalar_t* gp = go.const_data_ptr<scalar_t>();

  // Weight gradient, task (n, output row h): dW[n,j,t,l] = Σ_{c ≡ j mod C_w} X~[n,c,nb t]·G[n,c,l].
  scalar_t* gwp = grad_w.data_ptr<scalar_t>();
  at::parallel_for(0, g.n * g.ho, grain(g.c * g.kk * g.wo), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> rows_buf(g.k * g.wp), gw(cw * g.kk * g.wo), grow(g.wo);
    std::vector<const acc_t*> rows(g.k);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.ho, h = task % g.ho;
      std::fill(gw.begin(), gw.end(), acc_t(0));
      for (int64_t c = 0; c < g.c; ++c) {
        const int64_t nc = n * g.c + c;
        load_window_rows(rows.data(), rows_buf.data(), xp + nc * g.h * g.w, g, h);
        const acc_t* gr = as_acc(gp + nc * g.l + h * g.wo, g.wo, grow.data());
        weight_grad_row(gw.data() + (c % cw) * g.kk * g.wo, gr, rows.data(), g);
      }
      for (int64_t jt = 0; jt < cw * g.kk; ++jt) {
        scalar_t* dst = gwp + (n * cw * g.kk + jt) * g.l + h * g.wo;
        for (int64_t j = 0; j < g.wo; ++j) dst[j] = static_cast<scalar_t>(gw[jt * g.wo + j]);
      }
    }
  });

  // Input gradient, task (n, c) ordered (n, j, group) so neighbouring tasks share weights:
  // scatter W·G into a private padded plane, fold the reflected borders, crop.
  scalar_t* gxp = grad_x.data_ptr<scalar_t>();
  at::parallel_for(0, g.n * g.c, grain(g.kk * g.l), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> plane(g.hp * g.wp), grow(g.wo), w_buf(g.kk * g.wo);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.c, j = (task % g.c) / groups, c = (task % groups) * cw + j;
      const int64_t nc = n * g.c + c;
      std::fill(plane.begin(), plane.end(), acc_t(0));
      for (int64_t h = 0; h < g.ho; ++h) {
        const acc_t* gr = as_acc(gp + nc * g.l + h * g.wo, g.wo, grow.data());
        int64_t w_stride;
        const acc_t* w = as_acc_rows(wtp + (n * cw + j) * g.kk * g.l + h * g.wo, g.kk, g.l, g.wo,
                                     w_buf.data(), w_stride);
        input_grad_row(plane.data(), gr, w, w_stride, h, g);
      }
      store_plane_gradient(gxp + nc * g.h * g.w, plane.data(), g, acc_t(1));
    }
  });
}

template <typename scalar_t>
void subtraction2_forward_kernel(const SanShape& g, const at::Tensor& x1, const at::Tensor& x2,
                                 at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* x1p = x1.const_data_ptr<scalar_t>();
  const scalar_t* x2p = x2.const_data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  at::parallel_for(0, g.n * g.c, grain(g.kk * g.l), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> plane(g.hp * g.wp), centre(g.l);
    for (int64_t nc = begin; nc < end; ++nc) {
      load_padded_plane(plane.data(), x2p + nc * g.h * g.w, g);
      const scalar_t* x1c = x1p + nc * g.h * g.w;
      for (int64_t h = 0; h < g.ho; ++h)
        for (int64_t w = 0; w < g.wo; ++w)
          centre[h * g.wo + w] = static_cast<acc_t>(x1c[h * g.s * g.w + w * g.s]);
      subtraction_plane(op + nc * g.kk * g.l, centre.data(), plane.data(), g);
    }
  });
}

template <typename scalar_t>
void subtraction2_backward_kernel(const SanShape& g, const at::Tensor& go, at::Tensor& grad1,
                                  at::Tensor& grad2) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* gp = go.const_data_ptr<scalar_t>();
  scalar_t* g1p = grad1.data_ptr<scalar_t>();
  scalar_t* g2p = grad2.data_ptr<scalar_t>();
  at::parallel_for(0, g.n * g.c, grain(g.kk * g.l), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> plane(g.hp * g.wp), centre(g.l), grow(g.wo);
    for (int64_t nc = begin; nc < end; ++nc) {
      std::fill(plane.begin(), plane.end(), acc_t(0));
      std::fill(centre.begin(), centre.end(), acc_t(0));
      subtraction_grad_plane(centre.data(), plane.data(), gp + nc * g.kk * g.l, grow.data(), g);
      // input1 gets the centre sums on the stride lattice and zeros elsewhere.
      scalar_t* d1 = g1p + nc * g.h * g.w;
      std::fill(d1, d1 + g.h * g.w, scalar_t(0));
      for (int64_t h = 0; h < g.ho; ++h)
        for (int64_t w = 0; w < g.wo; ++w)
          d1[h * g.s * g.w + w * g.s] = static_cast<scalar_t>(centre[h * g.wo + w]);
      store_plane_gradient(g2p + nc * g.h * g.w, plane.data(), g, acc_t(-1));
    }
  });
}

// The case the SAN layers run (stride 1, reflect borders, centred window), which has the register-tiled
// kernels above, and its geometry for them.
bool centred_reflect(const SanShape& g) { return g.reflect && g.s == 1 && 2 * g.p == g.d * (g.k - 1); }

san::BandedWindow banded_window(const SanShape& g, int64_t weight_channels) {
  san::BandedWindow window{{g.n, g.c, weight_channels, g.h, g.w, g.k, g.kk, g.d, g.p}, 0};
  window.set_band();
  return window;
}

at::Tensor aggregation_forward(const at::Tensor& input, const at::Tensor& weight, int64_t kernel_size,
                               int64_t stride, int64_t padding, int64_t dilation, bool reflect) {
  const SanShape g = check_aggregation(input, weight, kernel_size, stride, padding, dilation, reflect,
                                       "localattn::aggregation");
  const at::Tensor x = input.contiguous(), wt = weight.contiguous();
  at::Tensor out = empty_output({g.n, g.c, g.ho, g.wo}, x.options());
  if (out.numel() == 0) return out;
  const san::BandedWindow window = banded_window(g, wt.size(1));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "aggregation_cpu", [&] {
    if (centred_reflect(g))
      san::run_tasks(AggregationForwardTasks<scalar_t, at::opmath_type<scalar_t>>{
          window, x.const_data_ptr<scalar_t>(), wt.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>()});
    else
      aggregation_forward_kernel<scalar_t>(g, x, wt, out);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> aggregation_backward(const at::Tensor& grad_out,
                                                        const at::Tensor& input,
                                                        const at::Tensor& weight,
                                                        int64_t kernel_size, int64_t stride,
                                                        int64_t padding, int64_t dilation,
                                                        bool reflect) {
  constexpr const char* opname = "localattn::aggregation_backward";
  const SanShape g = check_aggregation(input, weight, kernel_size, stride, padding, dilation, reflect,
                                       opname);
  check_cpu_float(grad_out, opname, "grad_out", input);
  check_shape(grad_out, {g.n, g.c, g.ho, g.wo}, opname, "grad_out");
  const at::Tensor x = input.contiguous(), wt = weight.contiguous(), go = grad_out.contiguous();
  at::Tensor grad_x = empty_output(x.sizes(), x.options());
  at::Tensor grad_w = empty_output(wt.sizes(), wt.options());
  if (go.numel() == 0) {  // no output pixel reads the inputs
    grad_x.zero_(), grad_w.zero_();
  } else {
    const san::BandedWindow window = banded_window(g, wt.size(1));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "aggregation_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      if (centred_reflect(g) && g.k >= kTiledGradMinKernel) {
        san::run_tasks(AggregationWeightGradTasks<scalar_t, acc_t>{
            window, x.const_data_ptr<scalar_t>(), go.const_data_ptr<scalar_t>(), grad_w.data_ptr<scalar_t>()});
        san::run_tasks(AggregationInputGradTasks<scalar_t, acc_t>{
            window, g, wt.const_data_ptr<scalar_t>(), go.const_data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>()});
      } else {
        aggregation_backward_kernel<scalar_t>(g, go, x, wt, grad_x, grad_w);
      }
    });
  }
  return {grad_x, grad_w};
}

at::Tensor subtraction2_forward(const at::Tensor& input1, const at::Tensor& input2, int64_t kernel_size,
                                int64_t stride, int64_t padding, int64_t dilation, bool reflect) {
  constexpr const char* opname = "localattn::subtraction2";
  const SanShape g = san_shape(input1.sizes(), kernel_size, stride, padding, dilation, reflect, opname);
  check_same_padding(g, opname);
  check_cpu_float(input1, opname, "input1", input1);
  check_cpu_float(input2, opname, "input2", input1);
  check_shape(input2, input1.sizes(), opname, "input2");
  const at::Tensor x1 = input1.contiguous(), x2 = input2.contiguous();
  at::Tensor out = empty_output({g.n, g.c, g.kk, g.l}, x1.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x1.scalar_type(), "subtraction2_cpu", [&] {
    subtraction2_forward_kernel<scalar_t>(g, x1, x2, out);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> subtraction2_backward(const at::Tensor& grad_out, int64_t height,
                                                         int64_t width, int64_t kernel_size,
                                                         int64_t stride, int64_t padding,
                                                         int64_t dilation, bool reflect) {
  constexpr const char* opname = "localattn::subtraction2_backward";
  TORCH_CHECK_VALUE(grad_out.dim() == 4, opname, ": grad_out must be 4-D (N, C, K*K, L), got ",
                    grad_out.sizes());
  TORCH_CHECK_VALUE(height >= 0 && width >= 0, opname, ": height and width must be >= 0, got ",
                    height, "x", width);
  const std::vector<int64_t> sizes{grad_out.size(0), grad_out.size(1), height, width};
  const SanShape g = san_shape(sizes, kernel_size, stride, padding, dilation, reflect, opname);
  check_same_padding(g, opname);
  check_cpu_float(grad_out, opname, "grad_out", grad_out);
  check_shape(grad_out, {g.n, g.c, g.kk, g.l}, opname, "grad_out");
  const at::Tensor go = grad_out.contiguous();
  at::Tensor grad1 = empty_output(sizes, go.options()), grad2 = empty_output(sizes, go.options());
  if (go.numel() == 0) {  // no output pixel reads the inputs
    grad1.zero_(), grad2.zero_();
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, go.scalar_type(), "subtraction2_backward_cpu", [&] {
      subtraction2_backward_kernel<scalar_t>(g, go, grad1, grad2);
    });
  }
  return {grad1, grad2};
}

}  // namespace
}  // namespace localattn::cpu

TORCH_LIBRARY_IMPL(localattn, CPU, m) {
  m.impl("aggregation", &localattn::cpu::aggregation_forward);
  m.impl("aggregation_backward", &localattn::cpu::aggregation_backward);
  m.impl("subtraction2", &localattn::cpu::subtraction2_forward);
  m.impl("subtraction2_backward", &localattn::cpu::subtraction2_backward);
}
