// Operator schemas of the `localattn` namespace, in the Python-free library `localattn/ops/_ops.so`.
//
// Loading the library (`torch.ops.load_library(localattn.ops.library_path())`, or `dlopen` from C++
// after libtorch) runs the static registrations below, which put the ops into `torch.ops.localattn`.
// CPU kernels live in cpu/*.cpp, CUDA kernels are Triton (registered from Python), fake kernels and
// autograd formulas are registered in ops/_library.py. Nothing here may include Python.h.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <mutex>
#include <set>
#include <thread>

namespace {

// Number of distinct threads `at::parallel_for` really uses for a large range: proves that the
// extension was compiled and linked with OpenMP (otherwise every parallel region is serial).
int64_t parallel_for_threads() {
  std::mutex lock;
  std::set<std::thread::id> ids;
  at::parallel_for(0, 1 << 16, 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> guard(lock);
    ids.insert(std::this_thread::get_id());
  });
  return static_cast<int64_t>(ids.size());
}

}  // namespace

TORCH_LIBRARY(localattn, m) {
  m.def(
      "elsa(Tensor features, Tensor? ghost_mul, Tensor? ghost_add, Tensor h_attn, int kernel_size, "
      "int dilation, int stride) -> Tensor");
  m.def(
      "elsa_backward(Tensor grad_out, Tensor features, Tensor? ghost_mul, Tensor? ghost_add, "
      "Tensor h_attn, int kernel_size, int dilation, int stride) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "aggregation(Tensor input, Tensor weight, int kernel_size, int stride, int padding, "
      "int dilation, bool reflect) -> Tensor");
  m.def(
      "aggregation_backward(Tensor grad_out, Tensor input, Tensor weight, int kernel_size, "
      "int stride, int padding, int dilation, bool reflect) -> (Tensor, Tensor)");
  m.def(
      "subtraction2(Tensor input1, Tensor input2, int kernel_size, int stride, int padding, "
      "int dilation, bool reflect) -> Tensor");
  m.def(
      "subtraction2_backward(Tensor grad_out, int height, int width, int kernel_size, int stride, "
      "int padding, int dilation, bool reflect) -> (Tensor, Tensor)");
  m.def("_parallel_for_threads() -> int", &parallel_for_threads);
}
