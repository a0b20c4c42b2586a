// ELSA operator on CPU (spec: shared/spec/elsa.md §1.2–1.6).
//
//   out[n,c,i,j] = Σ_k (M[n,c,k]·A[n,k,i,j] + D[n,c,k]) · X[n,c, i·s + (ky−r)d, j·s + (kx−r)d]
//
// Forward: one task per (n, output row i). For each channel the K input rows of the window are
// loaded once into zero-padded buffers; then for every tap k the output row gets
// acc[j] += (m_k·A[n,k,i,j] + d_k) · x[j·s + kx·d], a contiguous loop over j (for s = 1).
// Backward, pass 1, task (n, i): grad of A (owns row i of every k-plane, sums over c in a fixed
// order) and per-row partial sums of the ghost gradients, which a second step reduces over i in a
// fixed order. Pass 2, task (n, input row y): grad of X as a gather over the output rows whose
// window covers y. Every output element is written by exactly one task, so results are bit-equal
// for any thread count.
#include "cpu/common.h"

namespace localattn::cpu {
namespace {

struct ElsaShape {
  int64_t n, c, h, w, k, kk, d, s, r, ho, wo, wp;
};

ElsaShape check_elsa(const at::Tensor& x, const std::optional<at::Tensor>& mul,
                     const std::optional<at::Tensor>& add, const at::Tensor& attn, int64_t k,
                     int64_t d, int64_t s) {
  constexpr const char* op = "localattn::elsa";
  check_window(k, s, d, op);
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": features must be 4-D (N, C, H, W), got ", x.sizes());
  check_cpu_float(x, op, "features", x);
  ElsaShape g{x.size(0), x.size(1), x.size(2), x.size(3), k, k * k, d, s, (k - 1) / 2, 0, 0, 0};
  g.ho = g.h / s;
  g.wo = g.w / s;
  g.wp = g.w + 2 * g.r * d;
  check_cpu_float(attn, op, "h_attn", x);
  check_shape(attn, {g.n, g.kk, g.ho, g.wo}, op, "h_attn");
  for (const auto* ghost : {&mul, &add}) {
    if (ghost->has_value()) {
      check_cpu_float(**ghost, op, ghost == &mul ? "ghost_mul" : "ghost_add", x);
      check_shape(**ghost, {g.n, g.c, k, k}, op, ghost == &mul ? "ghost_mul" : "ghost_add");
    }
  }
  return g;
}

std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

// Per-channel ghost values m_k (1 without ghost_mul) and d_k (0 without ghost_add).
template <typename acc_t, typename scalar_t>
void load_ghost(acc_t* m, acc_t* dd, const scalar_t* mul, const scalar_t* add, int64_t kk) {
  for (int64_t t = 0; t < kk; ++t) {
    m[t] = mul ? static_cast<acc_t>(mul[t]) : acc_t(1);
    dd[t] = add ? static_cast<acc_t>(add[t]) : acc_t(0);
  }
}

// Loads the K window rows of output row i of one channel plane; rows outside the image are null.
template <typename acc_t, typename scalar_t>
LOCALATTN_SIMD_CLONES void load_window_rows(const acc_t** rows, acc_t* buffer, const scalar_t* plane,
                                           const ElsaShape& g, int64_t i) {
  for (int64_t ky = 0; ky < g.k; ++ky) {
    const int64_t y = i * g.s + (ky - g.r) * g.d;
    if (y < 0 || y >= g.h) {
      rows[ky] = nullptr;
      continue;
    }
    load_padded_row(buffer + ky * g.wp, plane + y * g.w, g.w, g.r * g.d, false);
    rows[ky] = buffer + ky * g.wp;
  }
}

// acc[j] += (mk·a[j] + dk)·x[j·s]
template <typename acc_t, typename S>
LOCALATTN_INLINE void filter_fma(acc_t* __restrict acc, const acc_t* __restrict a,
                                 const acc_t* __restrict x, acc_t mk, acc_t dk, int64_t n, S s) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) acc[j] += (mk * a[j] + dk) * x[j * s];
}

// p = g[j]·x[j·s]: ga[j] += mk·p; returns Σ p·a[j] in sm and Σ p in sd.
template <typename acc_t, typename S>
LOCALATTN_INLINE void backward_taps(acc_t* __restrict ga, acc_t& sm, acc_t& sd,
                                    const acc_t* __restrict gout, const acc_t* __restrict x,
                                    const acc_t* __restrict a, acc_t mk, int64_t n, S s) {
  acc_t sum_m = 0, sum_d = 0;
#pragma omp simd reduction(+ : sum_m, sum_d)
  for (int64_t j = 0; j < n; ++j) {
    const acc_t p = gout[j] * x[j * s];
    ga[j] += mk * p;
    sum_m += p * a[j];
    sum_d += p;
  }
  sm = sum_m, sd = sum_d;
}

// out[j·s] += g[j]·(mk·a[j] + dk)
template <typename acc_t, typename S>
LOCALATTN_INLINE void scatter_fma(acc_t* __restrict out, const acc_t* __restrict gout,
                                  const acc_t* __restrict a, acc_t mk, acc_t dk, int64_t n, S s) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j * s] += gout[j] * (mk * a[j] + dk);
}

// One channel, one output row: acc[j] = Σ_k (m_k·a_k[j] + d_k) · x_ky[j·s + kx·d].
template <typename acc_t>
LOCALATTN_SIMD_CLONES void forward_row(acc_t* acc, const acc_t* const* rows, const acc_t* attn,
                                       int64_t attn_stride, const acc_t* m, const acc_t* dd,
                                       const ElsaShape& g) {
  std::fill(acc, acc + g.wo, acc_t(0));
  for (int64_t ky = 0; ky < g.k; ++ky) {
    if (!rows[ky]) continue;
    for (int64_t kx = 0; kx < g.k; ++kx) {
      const int64_t t = ky * g.k + kx;
      const acc_t* a = attn + t * attn_stride;
      const acc_t* x = rows[ky] + kx * g.d;
      if (g.s == 1)
        filter_fma(acc, a, x, m[t], dd[t], g.wo, kUnit);
      else
        filter_fma(acc, a, x, m[t], dd[t], g.wo, g.s);
    }
  }
}

// One channel, one output row: grad_attn[k][j] += m_k·g[j]·p_k[j]; the sums of g·p_k·a_k (for
// ghost_mul) and of g·p_k (for ghost_add) go to sum_m[k], sum_d[k].
template <typename acc_t>
LOCALATTN_SIMD_CLONES void backward_row(acc_t* grad_attn, acc_t* sum_m, acc_t* sum_d,
                                        const acc_t* gout, const acc_t* const* rows,
                                        const acc_t* attn, int64_t attn_stride, const acc_t* m,
                                        const ElsaShape& g) {
  for (int64_t ky = 0; ky < g.k; ++ky) {
    for (int64_t kx = 0; kx < g.k; ++kx) {
      const int64_t t = ky * g.k + kx;
      sum_m[t] = sum_d[t] = 0;
      if (!rows[ky]) continue;
      const acc_t* a = attn + t * attn_stride;
      const acc_t* x = rows[ky] + kx * g.d;
      acc_t* ga = grad_attn + t * g.wo;
      if (g.s == 1)
        backward_taps(ga, sum_m[t], sum_d[t], gout, x, a, m[t], g.wo, kUnit);
      else
        backward_taps(ga, sum_m[t], sum_d[t], gout, x, a, m[t], g.wo, g.s);
    }
  }
}

// One channel, the taps kx of window row ky: acc[j·s + kx·d] += g[j]·(m_k·a_k[j] + d_k).
template <typename acc_t>
LOCALATTN_SIMD_CLONES void scatter_row(acc_t* acc, const acc_t* gout, const acc_t* attn,
                                       int64_t attn_stride, const acc_t* m, const acc_t* dd,
                                       int64_t ky, const ElsaShape& g) {
  for (int64_t kx = 0; kx < g.k; ++kx) {
    const int64_t t = ky * g.k + kx;
    const acc_t* a = attn + t * attn_stride;
    if (g.s == 1)
      scatter_fma(acc + kx * g.d, gout, a, m[t], dd[t], g.wo, kUnit);
    else
      scatter_fma(acc + kx * g.d, gout, a, m[t], dd[t], g.wo, g.s);
  }
}

template <typename scalar_t>
void elsa_forward_kernel(const ElsaShape& g, const at::Tensor& x, const at::Tensor& attn,
                         const std::optional<at::Tensor>& mul, const std::optional<at::Tensor>& add,
                         at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* ap = attn.const_data_ptr<scalar_t>();
  const scalar_t* mp = mul ? mul->const_data_ptr<scalar_t>() : nullptr;
  const scalar_t* dp = add ? add->const_data_ptr<scalar_t>() : nullptr;
  scalar_t* op = out.data_ptr<scalar_t>();
  const int64_t plane_o = g.ho * g.wo;
  at::parallel_for(0, g.n * g.ho, grain(g.c * g.kk * g.wo), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> rows_buf(g.k * g.wp), attn_buf(g.kk * g.wo), acc(g.wo), m(g.kk), dd(g.kk);
    std::vector<const acc_t*> rows(g.k);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.ho, i = task % g.ho;
      int64_t a_stride;
      const acc_t* a = as_acc_rows(ap + n * g.kk * plane_o + i * g.wo, g.kk, plane_o, g.wo,
                                   attn_buf.data(), a_stride);
      for (int64_t c = 0; c < g.c; ++c) {
        const int64_t nc = n * g.c + c;
        load_ghost(m.data(), dd.data(), mp ? mp + nc * g.kk : mp, dp ? dp + nc * g.kk : dp, g.kk);
        load_window_rows(rows.data(), rows_buf.data(), xp + nc * g.h * g.w, g, i);
        forward_row(acc.data(), rows.data(), a, a_stride, m.data(), dd.data(), g);
        scalar_t* o = op + nc * plane_o + i * g.wo;
        for (int64_t j = 0; j < g.wo; ++j) o[j] = static_cast<scalar_t>(acc[j]);
      }
    }
  });
}

template <typename scalar_t>
void elsa_backward_kernel(const ElsaShape& g, const at::Tensor& go, const at::Tensor& x,
                          const at::Tensor& attn, const std::optional<at::Tensor>& mul,
                          const std::optional<at::Tensor>& add, at::Tensor& grad_x,
                          at::Tensor& grad_mul, at::Tensor& grad_add, at::Tensor& grad_attn) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* ap = attn.const_data_ptr<scalar_t>();
  const scalar_t* gp = go.const_data_ptr<scalar_t>();
  const scalar_t* mp = mul ? mul->const_data_ptr<scalar_t>() : nullptr;
  const scalar_t* dp = add ? add->const_data_ptr<scalar_t>() : nullptr;
  const int64_t plane_o = g.ho * g.wo;
  const bool need_ghost = mp || dp;
  // Per-(n, i) partial ghost sums, reduced over i below: [mul|add] x (N, Ho, C, K²).
  at::Tensor partial = at::empty({need_ghost ? 2 : 0, g.n, g.ho, g.c, g.kk},
                                 x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  acc_t* part_m = need_ghost ? partial.data_ptr<acc_t>() : nullptr;
  acc_t* part_d = need_ghost ? part_m + g.n * g.ho * g.c * g.kk : nullptr;

  // Pass 1: grad of h_attn and partial ghost sums, task (n, output row i).
  scalar_t* gap = grad_attn.data_ptr<scalar_t>();
  at::parallel_for(0, g.n * g.ho, grain(g.c * g.kk * g.wo), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> rows_buf(g.k * g.wp), attn_buf(g.kk * g.wo), grow(g.wo), ga(g.kk * g.wo);
    std::vector<acc_t> m(g.kk), dd(g.kk), sm(g.kk), sd(g.kk);
    std::vector<const acc_t*> rows(g.k);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.ho, i = task % g.ho;
      int64_t a_stride;
      const acc_t* a = as_acc_rows(ap + n * g.kk * plane_o + i * g.wo, g.kk, plane_o, g.wo,
                                   attn_buf.data(), a_stride);
      std::fill(ga.begin(), ga.end(), acc_t(0));
      for (int64_t c = 0; c < g.c; ++c) {
        const int64_t nc = n * g.c + c;
        load_ghost(m.data(), dd.data(), mp ? mp + nc * g.kk : mp, dp ? dp + nc * g.kk : dp, g.kk);
        load_window_rows(rows.data(), rows_buf.data(), xp + nc * g.h * g.w, g, i);
        const acc_t* gr = as_acc(gp + nc * plane_o + i * g.wo, g.wo, grow.data());
        backward_row(ga.data(), sm.data(), sd.data(), gr, rows.data(), a, a_stride, m.data(), g);
        if (need_ghost) {
          std::copy(sm.begin(), sm.end(), part_m + (task * g.c + c) * g.kk);
          std::copy(sd.begin(), sd.end(), part_d + (task * g.c + c) * g.kk);
        }
      }
      for (int64_t t = 0; t < g.kk; ++t) {
        scalar_t* dst = gap + (n * g.kk + t) * plane_o + i * g.wo;
        for (int64_t j = 0; j < g.wo; ++j) dst[j] = static_cast<scalar_t>(ga[t * g.wo + j]);
      }
    }
  });

  // Ghost gradients: fixed-order sums of the partials over output rows, task (n, c).
  if (need_ghost) {
    scalar_t* gmp = mp ? grad_mul.data_ptr<scalar_t>() : nullptr;
    scalar_t* gdp = dp ? grad_add.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, g.n * g.c, grain(g.ho * g.kk), [&](int64_t begin, int64_t end) {
      for (int64_t nc = begin; nc < end; ++nc) {
        const int64_t n = nc / g.c, c = nc % g.c;
        for (int64_t t = 0; t < g.kk; ++t) {
          acc_t sm = 0, sd = 0;
          for (int64_t i = 0; i < g.ho; ++i) {
            const int64_t at = ((n * g.ho + i) * g.c + c) * g.kk + t;
            sm += part_m[at];
            sd += part_d[at];
          }
          if (gmp) gmp[nc * g.kk + t] = static_cast<scalar_t>(sm);
          if (gdp) gdp[nc * g.kk + t] = static_cast<scalar_t>(sd);
        }
      }
    });
  }

  // Pass 2: grad of features, task (n, input row y), gathering the output rows i with
  // i·s + (ky − r)·d = y.
  scalar_t* gxp = grad_x.data_ptr<scalar_t>();
  at::parallel_for(0, g.n * g.h, grain(g.c * g.kk * g.wo), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(g.wp), attn_buf(g.k * g.kk * g.wo), grow(g.wo), m(g.kk), dd(g.kk);
    std::vector<int64_t> rows_i(g.k);
    std::vector<const acc_t*> rows_a(g.k);
    int64_t a_stride = 0;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.h, y = task % g.h;
      for (int64_t ky = 0; ky < g.k; ++ky) {
        const int64_t num = y - (ky - g.r) * g.d;
        const bool hit = num >= 0 && num % g.s == 0 && num / g.s < g.ho;
        rows_i[ky] = hit ? num / g.s : -1;
        if (hit)
          rows_a[ky] = as_acc_rows(ap + n * g.kk * plane_o + rows_i[ky] * g.wo, g.kk, plane_o, g.wo,
                                   attn_buf.data() + ky * g.kk * g.wo, a_stride);
      }
      for (int64_t c = 0; c < g.c; ++c) {
        const int64_t nc = n * g.c + c;
        load_ghost(m.data(), dd.data(), mp ? mp + nc * g.kk : mp, dp ? dp + nc * g.kk : dp, g.kk);
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t ky = 0; ky < g.k; ++ky) {
          if (rows_i[ky] < 0) continue;
          const acc_t* gr = as_acc(gp + nc * plane_o + rows_i[ky] * g.wo, g.wo, grow.data());
          scatter_row(acc.data(), gr, rows_a[ky], a_stride, m.data(), dd.data(), ky, g);
        }
        scalar_t* dst = gxp + (nc * g.h + y) * g.w;
        const acc_t* src = acc.data() + g.r * g.d;
        for (int64_t col = 0; col < g.w; ++col) dst[col] = static_cast<scalar_t>(src[col]);
      }
    }
  });
}

at::Tensor elsa_forward(const at::Tensor& features, const std::optional<at::Tensor>& ghost_mul,
                        const std::optional<at::Tensor>& ghost_add, const at::Tensor& h_attn,
                        int64_t kernel_size, int64_t dilation, int64_t stride) {
  const ElsaShape g = check_elsa(features, ghost_mul, ghost_add, h_attn, kernel_size, dilation, stride);
  const at::Tensor x = features.contiguous(), attn = h_attn.contiguous();
  const auto mul = contiguous(ghost_mul), add = contiguous(ghost_add);
  at::Tensor out = empty_output({g.n, g.c, g.ho, g.wo}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "elsa_cpu", [&] {
    elsa_forward_kernel<scalar_t>(g, x, attn, mul, add, out);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> elsa_backward(
    const at::Tensor& grad_out, const at::Tensor& features,
    const std::optional<at::Tensor>& ghost_mul, const std::optional<at::Tensor>& ghost_add,
    const at::Tensor& h_attn, int64_t kernel_size, int64_t dilation, int64_t stride) {
  const ElsaShape g = check_elsa(features, ghost_mul, ghost_add, h_attn, kernel_size, dilation, stride);
  check_cpu_float(grad_out, "localattn::elsa_backward", "grad_out", features);
  check_shape(grad_out, {g.n, g.c, g.ho, g.wo}, "localattn::elsa_backward", "grad_out");
  const at::Tensor x = features.contiguous(), attn = h_attn.contiguous(), go = grad_out.contiguous();
  const auto mul = contiguous(ghost_mul), add = contiguous(ghost_add);
  at::Tensor grad_x = empty_output(x.sizes(), x.options());
  at::Tensor grad_attn = empty_output(attn.sizes(), attn.options());
  at::Tensor grad_mul = mul ? at::empty_like(*mul) : at::empty({0}, x.options());
  at::Tensor grad_add = add ? at::empty_like(*add) : at::empty({0}, x.options());
  if (go.numel() == 0) {  // no output pixel reads the inputs
    grad_x.zero_(), grad_attn.zero_(), grad_mul.zero_(), grad_add.zero_();
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "elsa_backward_cpu", [&] {
      elsa_backward_kernel<scalar_t>(g, go, x, attn, mul, add, grad_x, grad_mul, grad_add, grad_attn);
    });
  }
  return {grad_x, grad_mul, grad_add, grad_attn};
}

}  // namespace
}  // namespace localattn::cpu

TORCH_LIBRARY_IMPL(localattn, CPU, m) {
  m.impl("elsa", &localattn::cpu::elsa_forward);
  m.impl("elsa_backward", &localattn::cpu::elsa_backward);
}
