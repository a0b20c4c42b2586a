// Fused ELSA attention, CPU backward: kernel launcher (kernels: elsa_attention.h).
#include "cpu/elsa_attention.h"

namespace localattn::cpu {
namespace {
using namespace elsa;

template <typename scalar_t>
void backward_kernel(const Geom& g, const at::Tensor& go, const at::Tensor& logits,
                     const at::Tensor& values, const std::optional<at::Tensor>& mul,
                     const std::optional<at::Tensor>& add, at::Tensor& grad_logits,
                     at::Tensor& grad_values, at::Tensor& grad_mul, at::Tensor& grad_add) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t L = kBlock<acc_t>;
  const Ghost<acc_t> ghost = load_ghost<scalar_t, acc_t>(g, mul, add);
  const int64_t rows = g.b * g.ho, band = band_rows(g);
  const auto acc_options = values.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor attn_t = at::empty({rows, g.wo, g.heads * g.kkp}, acc_options);
  // partial ghost gradients per output row: of M where ghost_mul is given, of D where ghost_add is
  const int64_t part_size = rows * g.kk * g.cvp;
  at::Tensor part_t = at::empty({int64_t(mul.has_value()) + int64_t(add.has_value()), part_size}, acc_options);
  acc_t* part_m = mul ? part_t.data_ptr<acc_t>() : nullptr;
  acc_t* part_d = add ? part_t.data_ptr<acc_t>() + (mul ? part_size : 0) : nullptr;
  Args<scalar_t, acc_t> a{g, band, values.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(),
                          go.const_data_ptr<scalar_t>(), {go.stride(0), go.stride(1), go.stride(2)},
                          ghost.mul.empty() ? nullptr : ghost.mul.data(),
                          ghost.add.empty() ? nullptr : ghost.add.data(), nullptr,
                          grad_logits.data_ptr<scalar_t>(), grad_values.data_ptr<scalar_t>(),
                          attn_t.data_ptr<acc_t>(), part_m, part_d};
  const CpuIsa isa = cpu_isa();
  at::parallel_for(0, band_tasks(g, band), grain(band * g.cv * g.kk * g.wo), [&](int64_t begin, int64_t end) {
    ELSA_RUN_ISA(backward_attn_tasks, isa, a, begin, end);
  });

  // Ghost gradients: sums of the per-row partials in row order; task = tap.
  for (auto [part, grad] : {std::pair{part_m, &grad_mul}, std::pair{part_d, &grad_add}}) {
    if (!part) continue;
    scalar_t* dst = grad->template data_ptr<scalar_t>();
    at::parallel_for(0, g.kk, grain(rows * g.cvp), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> sum(g.cvp);
      for (int64_t t = begin; t < end; ++t) {
        std::fill(sum.begin(), sum.end(), acc_t(0));
        for (int64_t row = 0; row < rows; ++row) {
          const acc_t* p = part + (row * g.kk + t) * g.cvp;
          for (int64_t cp = 0; cp < g.cvp; ++cp) sum[cp] += p[cp];
        }
        for (int64_t c = 0; c < g.cv; ++c) {
          const int64_t cc = c % g.cg, cp = ((c / g.cg) * g.nblk + cc / L) * L + cc % L;
          dst[c * g.kk + t] = static_cast<scalar_t>(sum[cp]);
        }
      }
    });
  }

  at::parallel_for(0, g.b * g.h, grain(g.cv * g.kk * g.w), [&](int64_t begin, int64_t end) {
    ELSA_RUN_ISA(backward_input_tasks, isa, a, begin, end);
  });
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

}  // namespace
}  // namespace localattn::cpu

TORCH_LIBRARY_IMPL(localattn, CPU, m) {
  m.impl("elsa_attention_backward", &localattn::cpu::elsa_attention_backward_cpu);
}
