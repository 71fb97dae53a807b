#include "xdq/parallel.h"

#include <thread>

#include <ATen/Parallel.h>

namespace xdq {

int apply_thread_count(int requested) {
  const int n = requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  return n;
}

}  // namespace xdq
