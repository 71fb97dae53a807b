#include "xdq/parallel.h"

#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <limits>
#include <mutex>
#include <thread>

#include <ATen/Parallel.h>

#ifdef XDQ_HAVE_TBB
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#endif

namespace xdq {

double peak_resident_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

void keep_freed_memory() {
  // glibc gives blocks above a moving threshold (128 KiB at first) back to the system when freed, and
  // trims the heap's top: each new activation of that size then page-faults as the kernel zeroes it again.
  // Blocks up to 32 MiB (glibc's ceiling) now come from the heap and stay there once freed.
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  });
}

void release_freed_memory() { malloc_trim(0); }

int apply_thread_count(int requested) {
  keep_freed_memory();
  const int n = requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  return n;
}

void run_jobs(std::size_t n, int jobs, int threads, const std::function<void(std::size_t)>& body) {
#ifdef XDQ_HAVE_TBB
  if (jobs > 1 && n > 1) {
    const int per_job = std::max(1, threads / jobs);
    // at::set_num_threads sets the OpenMP team size of the calling thread (oneDNN and OpenBLAS read it
    // per thread), so every worker sets it before its job.
    struct RestoreThreads {
      int threads;
      ~RestoreThreads() { at::set_num_threads(threads); }
    } restore{threads};
    at::set_num_threads(per_job);
    tbb::task_arena arena(jobs);
    arena.execute([&] {
      tbb::parallel_for(std::size_t{0}, n, std::size_t{1}, [&](std::size_t i) {
        at::set_num_threads(per_job);
        body(i);
      });
    });
    return;
  }
#endif
  (void)jobs;
  (void)threads;
  for (std::size_t i = 0; i < n; ++i) body(i);
}

bool parallel_jobs_available() {
#ifdef XDQ_HAVE_TBB
  return true;
#else
  return false;
#endif
}

void for_each_parallel(std::size_t n, const std::function<void(std::size_t)>& f) {
#ifdef XDQ_HAVE_TBB
  tbb::parallel_for(std::size_t{0}, n, std::size_t{1}, f);
#else
  for (std::size_t i = 0; i < n; ++i) f(i);
#endif
}

void SharedLineStream::Buffer::emit() {
  std::lock_guard<std::mutex> lock(mutex_);
  shared_ << line_ << std::flush;
  line_.clear();
}

SharedLineStream::Buffer::int_type SharedLineStream::Buffer::overflow(int_type c) {
  if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
  line_ += traits_type::to_char_type(c);
  if (c == '\n' || c == '\r') emit();
  return c;
}

SharedLineStream::~SharedLineStream() {
  if (!buffer_.line_pending()) return;
  buffer_.overflow('\n');
}

}  // namespace xdq
