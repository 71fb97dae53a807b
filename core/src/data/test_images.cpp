#include "xdq/data/test_images.h"

#include <malloc.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <iostream>
#include <mutex>
#include <thread>

#include "xdq/error.h"

namespace xdq {

struct TestImages::Files {
  ImageFileList list;
  at::Tensor rows;
  InputShape shape;
  bool skip_unreadable = false;
  BatchTransform transform;
  std::mutex mutex;
  std::vector<bool> unreadable;  // by position in `rows`, as far as passes so far found
  std::int64_t reported = 0;     // unreadable files already named in a warning
};

TestImages::TestImages(const Dataset& data) : name_(data.name), memory_(&data) {
  if (!data.labeled()) throw Error(data.name + ": a test set needs labels");
}

TestImages::TestImages(std::string name, ImageFileList files, at::Tensor rows, InputShape shape, bool skip_unreadable,
                       BatchTransform transform)
    : name_(std::move(name)), files_(std::make_shared<Files>()) {
  files_->list = std::move(files);
  files_->rows = std::move(rows);
  files_->shape = shape;
  files_->skip_unreadable = skip_unreadable;
  files_->transform = std::move(transform);
  files_->unreadable.assign(static_cast<std::size_t>(files_->rows.numel()), false);
}

std::int64_t TestImages::size() const {
  if (memory_) return memory_->size();
  std::lock_guard<std::mutex> lock(files_->mutex);
  return files_->rows.numel() - std::count(files_->unreadable.begin(), files_->unreadable.end(), true);
}

at::Tensor TestImages::labels() const {
  if (memory_) return memory_->labels;
  std::vector<std::int64_t> labels;
  const std::int64_t* row = files_->rows.data_ptr<std::int64_t>();
  std::lock_guard<std::mutex> lock(files_->mutex);
  for (std::int64_t i = 0; i < files_->rows.numel(); ++i)
    if (!files_->unreadable[static_cast<std::size_t>(i)]) labels.push_back(files_->list.labels.at(static_cast<std::size_t>(row[i])));
  return at::tensor(labels, at::kLong);
}

// Rows [begin, end) of the file list decoded and transformed; unreadable ones (skip) recorded and left out.
Dataset TestImages::decode(std::int64_t begin, std::int64_t end) const {
  Files& f = *files_;
  std::vector<bool> readable;
  Dataset d = load_image_files(f.list, f.rows.slice(0, begin, end), f.shape, f.skip_unreadable, &readable);
  d.name = name_;
  {
    std::lock_guard<std::mutex> lock(f.mutex);
    for (std::size_t i = 0; i < readable.size(); ++i)
      if (!readable[i]) f.unreadable[static_cast<std::size_t>(begin) + i] = true;
  }
  if (f.transform && d.size() > 0) d.images = f.transform(d.images, begin);
  return d;
}

void TestImages::for_each_batch(std::int64_t batch, const Visit& visit) const {
  if (memory_) {
    for (std::int64_t b = 0; b < memory_->size(); b += batch) {
      const std::int64_t e = std::min(memory_->size(), b + batch);
      visit(memory_->images.slice(0, b, e), memory_->labels.slice(0, b, e));
    }
    return;
  }
  // Producer: decodes batches in order into a queue of at most two; the consumer (this thread) evaluates.
  const std::int64_t total = files_->rows.numel();
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<Dataset> ready;
  std::exception_ptr failure;
  bool stop = false, done = false;
  std::thread producer([&] {
    try {
      for (std::int64_t b = 0; b < total; b += batch) {
        Dataset next = decode(b, std::min(total, b + batch));
        std::unique_lock<std::mutex> lock(mutex);
        changed.wait(lock, [&] { return stop || ready.size() < 2; });
        if (stop) return;
        ready.push_back(std::move(next));
        changed.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      failure = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mutex);
    done = true;
    changed.notify_all();
  });
  auto finish = [&] {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
      changed.notify_all();
    }
    producer.join();
  };
  try {
    for (;;) {
      Dataset next;
      {
        std::unique_lock<std::mutex> lock(mutex);
        changed.wait(lock, [&] { return !ready.empty() || done; });
        if (ready.empty()) break;
        next = std::move(ready.front());
        ready.pop_front();
        changed.notify_all();
      }
      if (next.size() > 0) visit(next.images, next.labels);
      // The batch was allocated by the decoding thread and is freed here: glibc keeps such memory in that
      // thread's arena, which then grows with the number of batches. Returning the free pages after each
      // batch keeps a streamed pass at a few batches of memory whatever the set's size.
      next = Dataset();
      malloc_trim(0);
    }
  } catch (...) {
    finish();
    throw;
  }
  finish();
  if (failure) std::rethrow_exception(failure);
  std::lock_guard<std::mutex> lock(files_->mutex);
  const auto skipped = std::count(files_->unreadable.begin(), files_->unreadable.end(), true);
  if (skipped > files_->reported)
    std::cerr << "xdq: warning: " << files_->list.root << ": " << skipped << " unreadable image file(s) left out of "
              << name_ << "\n";
  files_->reported = skipped;
}

Dataset TestImages::head(std::int64_t n) const {
  if (memory_) return memory_->slice(0, std::min(n, memory_->size()));
  std::vector<at::Tensor> images, labels;
  std::int64_t have = 0, next_row = 0;
  while (next_row < files_->rows.numel() && have < n) {
    const std::int64_t end = std::min(files_->rows.numel(), next_row + (n - have));
    Dataset part = decode(next_row, end);
    next_row = end;
    have += part.size();
    images.push_back(part.images);
    labels.push_back(part.labels);
  }
  return Dataset{name_, at::cat(images), at::cat(labels)};
}

}  // namespace xdq
