#pragma once
// Fashion-MNIST from the gzipped IDX files of Debian's dataset-fashion-mnist package.
#include <string>

#include "xdq/data/dataset.h"

namespace xdq {

enum class Split { Train, Test };

// Directory holding {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz: `preferred` if non-empty, else
// $XDQ_FASHION_MNIST_DIR, else the Debian package's location.
std::string fashion_mnist_dir(const std::string& preferred = "");

Dataset load_fashion_mnist(const std::string& dir, Split split);

// Reads one gzipped IDX file: images as uint8 [N, 1, H, W] or labels as uint8 [N].
at::Tensor read_idx_gz(const std::string& path);

}  // namespace xdq
