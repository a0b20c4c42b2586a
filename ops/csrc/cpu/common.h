// Shared pieces of the CPU kernels: argument checks, padded-row loading (zero / reflect borders),
// the reflection fold used by the SAN input gradients, and dtype conversion of rows.
//
// Layout idea used by every kernel: a task owns whole output rows (or planes). The input rows a task
// needs are copied once into a zero- or reflect-padded buffer in the accumulation type, so the hot
// loops are branch-free, contiguous (for stride 1) multiply-adds over an output row that the compiler
// vectorises. All indexing is int64_t.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <string>
#include <cstdint>
#include <new>
#include <type_traits>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

// Hot loops are compiled twice, for x86-64-v3 (AVX2+FMA) and for the baseline ISA, and picked at load
// time (GCC >= 12 function multi-versioning; other compilers build the baseline only). Helpers they
// call are force-inlined into each clone.
#if defined(__x86_64__) && !defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 12
#define LOCALATTN_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LOCALATTN_SIMD_CLONES
#endif
#define LOCALATTN_INLINE inline __attribute__((always_inline))

namespace localattn::cpu {

// Scratch buffers of the hot loops, 64-byte (cache-line) aligned. std::vector's storage is only
// 16-byte aligned, so a 64-byte vector load or store from it straddles two cache lines; a split
// store costs several times a plain one on Intel cores.
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, kAlign); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
};
template <typename T>
using Scratch = std::vector<T, CacheLineAllocator<T>>;

// Compile-time unit stride: loops indexing x[j * s] with s = kUnit become contiguous vector loads.
using Unit = std::integral_constant<int64_t, 1>;
inline constexpr Unit kUnit{};

inline void check_cpu_float(const at::Tensor& t, const char* op, const char* name,
                            const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), op, ": ", name, " has dtype ",
                   t.scalar_type(), " but expected ", like.scalar_type());
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be a floating-point tensor, got ", t.scalar_type());
}

inline void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* op,
                        const char* name) {
  TORCH_CHECK_VALUE(t.sizes() == expected, op, ": ", name, " must have shape ", expected, ", got ",
                    t.sizes());
}

inline void check_window(int64_t kernel_size, int64_t stride, int64_t dilation, const char* op) {
  TORCH_CHECK_VALUE(kernel_size > 0 && kernel_size % 2 == 1, op,
                    ": kernel_size must be a positive odd integer, got ", kernel_size);
  TORCH_CHECK_VALUE(stride > 0, op, ": stride must be >= 1, got ", stride);
  TORCH_CHECK_VALUE(dilation > 0, op, ": dilation must be >= 1, got ", dilation);
}

// at::empty for kernel outputs. Blocks of 32 MiB and more always get their own mmap from glibc, so
// every call pays one page fault per 4 KiB page on first touch (with K² = 49, subtraction2's output
// is 49× its input). For those, ask the kernel for transparent huge pages on the 2 MiB-aligned
// interior: one fault per 2 MiB. Only a hint (no-op when THP is off), ownership stays with torch.
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
#ifdef __linux__
  constexpr uintptr_t kHuge = uintptr_t(2) << 20, kMinBytes = uintptr_t(32) << 20;
  if (out.nbytes() >= kMinBytes) {
    const auto start = reinterpret_cast<uintptr_t>(out.data_ptr());
    const uintptr_t begin = (start + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t end = (start + out.nbytes()) & ~(kHuge - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
  return out;
}

// Grain (in tasks) for at::parallel_for so that a chunk carries at least ~GRAIN_SIZE multiply-adds:
// tiny problems (e.g. gradcheck) run inline without opening an OpenMP region.
inline int64_t grain(int64_t work_per_task) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, work_per_task));
}

// Index of a row/column after one mirror reflection (no edge repeat); valid for -n < y < 2n - 1.
inline int64_t reflect_index(int64_t y, int64_t n) {
  return y < 0 ? -y : (y >= n ? 2 * (n - 1) - y : y);
}

// dst[0 : w + 2*pad] = src[0 : w] with `pad` border columns on each side (zeros or a reflection,
// which requires pad <= w - 1), converted to the accumulation type.
template <typename acc_t, typename scalar_t>
LOCALATTN_INLINE void load_padded_row(acc_t* dst, const scalar_t* src, int64_t w, int64_t pad,
                                      bool reflect) {
  acc_t* mid = dst + pad;
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    std::copy(src, src + w, mid);
  } else {
    for (int64_t x = 0; x < w; ++x) mid[x] = static_cast<acc_t>(src[x]);
  }
  if (reflect) {
    for (int64_t v = 0; v < pad; ++v) {
      dst[v] = mid[pad - v];
      mid[w + v] = mid[w - 2 - v];
    }
  } else {
    std::fill(dst, mid, acc_t(0));
    std::fill(mid + w, mid + w + pad, acc_t(0));
  }
}

// Returns `src` itself when no conversion is needed, else converts n values into `buffer`.
template <typename acc_t, typename scalar_t>
inline const acc_t* as_acc(const scalar_t* src, int64_t n, acc_t* buffer) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    return src;
  } else {
    for (int64_t i = 0; i < n; ++i) buffer[i] = static_cast<acc_t>(src[i]);
    return buffer;
  }
}

// `count` rows of n values at src + t·stride as acc_t: the rows themselves when no conversion is
// needed, else converted into `buffer` (row stride n). `out_stride` receives the row stride.
template <typename acc_t, typename scalar_t>
inline const acc_t* as_acc_rows(const scalar_t* src, int64_t count, int64_t stride, int64_t n,
                                acc_t* buffer, int64_t& out_stride) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    out_stride = stride;
    return src;
  } else {
    for (int64_t t = 0; t < count; ++t) as_acc(src + t * stride, n, buffer + t * n);
    out_stride = n;
    return buffer;
  }
}

// Adjoint of reflect padding on one (h + 2p) x (w + 2p) plane, in place: border rows and then border
// columns are mirrored back onto the rows/columns they were read from; the interior
// [p, p + h) x [p, p + w) then holds the gradient of the unpadded plane.
template <typename acc_t>
inline void fold_reflect(acc_t* plane, int64_t h, int64_t w, int64_t p) {
  const int64_t wp = w + 2 * p;
  auto add_row = [&](int64_t from, int64_t to) {
    const acc_t* src = plane + from * wp;
    acc_t* dst = plane + to * wp;
    for (int64_t v = 0; v < wp; ++v) dst[v] += src[v];
  };
  for (int64_t u = 0; u < p; ++u) add_row(u, 2 * p - u);
  for (int64_t u = h + p; u < h + 2 * p; ++u) add_row(u, 2 * (h - 1) + 2 * p - u);
  for (int64_t u = p; u < p + h; ++u) {
    acc_t* row = plane + u * wp;
    for (int64_t v = 0; v < p; ++v) row[2 * p - v] += row[v];
    for (int64_t v = w + p; v < w + 2 * p; ++v) row[2 * (w - 1) + 2 * p - v] += row[v];
  }
}

// Runtime ISA dispatch for kernels that pick their own code path per call (instead of target
// clones): the best ISA this CPU has, capped by `cpu_isa_cap()` (set by the op `_set_cpu_isa`, so
// tests can run every compiled path on one machine).
enum class CpuIsa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

inline const std::array<std::string, 3>& cpu_isa_names() {
  static const std::array<std::string, 3> names{"baseline", "avx2", "avx512"};
  return names;
}

inline CpuIsa detected_cpu_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const CpuIsa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      return CpuIsa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::kAvx2;
    return CpuIsa::kBaseline;
  }();
  return isa;
#else
  return CpuIsa::kBaseline;
#endif
}

inline std::atomic<int>& cpu_isa_cap() {
  static std::atomic<int> cap{static_cast<int>(CpuIsa::kAvx512)};
  return cap;
}

inline CpuIsa cpu_isa() {
  return static_cast<CpuIsa>(std::min(static_cast<int>(detected_cpu_isa()), cpu_isa_cap().load()));
}

}  // namespace localattn::cpu
