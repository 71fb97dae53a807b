#pragma once
// A labeled test set read batch by batch, so that a test domain of any size is evaluated in constant
// memory: either a Dataset in memory, or image files decoded while the previous batch is being evaluated
// (a producer thread decoding on all cores, at most two decoded batches waiting).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "xdq/data/dataset.h"
#include "xdq/data/image_files.h"
#include "xdq/progress.h"

namespace xdq {

class TestImages {
 public:
  // images [b, C, H, W] in [0, 1] of rows [first, first + b) of the set -> the same images transformed.
  using BatchTransform = std::function<at::Tensor(const at::Tensor& images, std::int64_t first)>;
  using Visit = std::function<void(const at::Tensor& images, const at::Tensor& labels)>;

  // Reads `data`, which its owner keeps alive.
  explicit TestImages(const Dataset& data);
  // files.files[rows[i]], decoded to `shape` when read; unreadable files are an Error naming them, or
  // (skip_unreadable) left out: they are counted on the first pass and the set shrinks by them.
  TestImages(std::string name, ImageFileList files, at::Tensor rows, InputShape shape, bool skip_unreadable,
             BatchTransform transform);

  const std::string& name() const { return name_; }
  std::int64_t size() const;
  at::Tensor labels() const;  // int64 [size()], without decoding anything
  // visit() on consecutive batches of at most `batch` images, in order.
  void for_each_batch(std::int64_t batch, const Visit& visit) const;
  Dataset head(std::int64_t n) const;  // the first min(n, size()) images and labels, in memory

 private:
  struct Files;
  Dataset decode(std::int64_t begin, std::int64_t end) const;

  std::string name_;
  const Dataset* memory_ = nullptr;
  std::shared_ptr<Files> files_;
};

// Top-1 accuracy (fraction) of `forward` on `data` (preprocessed with `pre`), in batches, without
// autograd. With `progress`, a bar named `label` (images/s, ETA) shows while it lasts; only passes longer
// than a few seconds leave a line. With `predictions`, each batch's predicted classes (on the CPU) are
// appended to it, in the order the batches came; with `correct`, whether each image's was right.
template <class Forward>
double top1_accuracy(Forward&& forward, const TestImages& data, const Preprocess& pre, std::int64_t batch = 256,
                     std::ostream* progress = nullptr, const std::string& label = "evaluation",
                     std::vector<at::Tensor>* predictions = nullptr, std::vector<bool>* correct = nullptr) {
  at::NoGradGuard no_grad;
  ProgressBar bar(progress, label, data.size());
  std::int64_t hits = 0, seen = 0;
  data.for_each_batch(batch, [&](const at::Tensor& images, const at::Tensor& labels) {
    const at::Tensor predicted = forward(pre.apply(images)).argmax(1).cpu();
    if (predictions) predictions->push_back(predicted);
    const at::Tensor right = predicted.eq(labels.cpu());
    if (correct) {
      const at::Tensor bytes = right.to(at::kByte).contiguous();
      correct->insert(correct->end(), bytes.data_ptr<std::uint8_t>(), bytes.data_ptr<std::uint8_t>() + bytes.numel());
    }
    hits += right.sum().template item<std::int64_t>();
    seen += images.size(0);
    bar.update(seen, bar.rate(seen, "img/s"));
  });
  bar.finish_if_long(bar.rate(seen, "img/s"));
  return seen ? static_cast<double>(hits) / static_cast<double>(seen) : 0.0;
}

}  // namespace xdq
