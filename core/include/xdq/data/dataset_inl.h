#pragma once
#include <algorithm>
#include <string>

#include <ATen/core/grad_mode.h>

#include "xdq/error.h"
#include "xdq/progress.h"

namespace xdq {

template <class Forward>
double top1_accuracy(Forward&& forward, const Dataset& data, const Preprocess& pre, std::int64_t batch,
                     std::ostream* progress, const std::string& label) {
  if (!data.labeled()) throw Error(data.name + ": top-1 needs labels");
  at::NoGradGuard no_grad;
  ProgressBar bar(progress, label, data.size());
  std::int64_t correct = 0;
  for (std::int64_t b = 0; b < data.size(); b += batch) {
    const std::int64_t e = std::min(data.size(), b + batch);
    at::Tensor logits = forward(pre.apply(data.images.slice(0, b, e)));
    correct += logits.argmax(1).eq(data.labels.slice(0, b, e)).sum().item<std::int64_t>();
    bar.update(e, bar.rate(e, "img/s"));
  }
  bar.finish_if_long(bar.rate(data.size(), "img/s"));
  return data.size() ? static_cast<double>(correct) / static_cast<double>(data.size()) : 0.0;
}

}  // namespace xdq
