// Fused ELSA attention, CPU: schemas, forward kernel launcher and autocast (kernels: elsa_attention.h).
#include "cpu/elsa_attention.h"

#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace localattn::cpu {
namespace {
using namespace elsa;

template <typename scalar_t>
void forward_kernel(const Geom& g, const at::Tensor& logits, const at::Tensor& values,
                    const std::optional<at::Tensor>& mul, const std::optional<at::Tensor>& add,
                    at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const Ghost<acc_t> ghost = load_ghost<scalar_t, acc_t>(g, mul, add);
  const int64_t band = band_rows(g);
  const Args<scalar_t, acc_t> a{g, band, values.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(),
                                nullptr, {0, 0, 0}, ghost.mul.empty() ? nullptr : ghost.mul.data(),
                                ghost.add.empty() ? nullptr : ghost.add.data(), out.data_ptr<scalar_t>(),
                                nullptr, nullptr, nullptr, nullptr, nullptr};
  const CpuIsa isa = cpu_isa();
  at::parallel_for(0, band_tasks(g, band), grain(band * g.cv * g.kk * g.wo), [&](int64_t begin, int64_t end) {
    ELSA_RUN_ISA(forward_tasks, isa, a, begin, end);
  });
}

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
}

TORCH_LIBRARY_IMPL(localattn, AutocastCPU, m) {
  m.impl("elsa_attention", &localattn::cpu::elsa_attention_autocast<c10::DispatchKey::AutocastCPU,
                                                                     c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(localattn, AutocastCUDA, m) {
  m.impl("elsa_attention", &localattn::cpu::elsa_attention_autocast<c10::DispatchKey::AutocastCUDA,
                                                                     c10::DeviceType::CUDA>);
}
