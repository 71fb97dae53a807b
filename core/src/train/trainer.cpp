#include "xdq/train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <torch/optim/sgd.h>
#include <torch/nn/functional/loss.h>

#include "xdq/config/node.h"
#include "xdq/data/sources.h"
#include "xdq/data/test_images.h"
#include "xdq/error.h"
#include "xdq/parallel.h"
#include "xdq/train/zoo.h"

namespace xdq {

namespace {

struct Recipe {
  std::string arch_name = "resnet";
  zoo::ResNetSpec arch;  // depth used by resnet; width, channels and classes by all
  int expansion = 4;
  std::string dataset = "fashion_mnist";
  std::string data_dir;  // fashion_mnist folder override
  std::int64_t height = 28, width = 28;
  Preprocess preprocess;
  int epochs = 15;
  int batch_size = 128;
  double lr = 0.1, momentum = 0.9, weight_decay = 5e-4;
  bool nesterov = true;
  int crop_padding = 2;
  bool hflip = true;
  std::uint64_t seed = 0;
  int threads = 0;
  std::string output, log;
};

Recipe parse_recipe(const ConfigNode& root, const std::filesystem::path& base) {
  root.check_keys({"model", "data", "train", "seed", "threads", "output", "log"});
  Recipe r;
  const ConfigNode model = root["model"];
  model.check_keys({"arch", "depth", "width", "in_channels", "num_classes", "expansion"});
  r.arch_name = model["arch"].as_string();
  if (r.arch_name != "resnet" && r.arch_name != "vgg" && r.arch_name != "mobilenet_v2" && r.arch_name != "shufflenet_v2")
    model["arch"].fail("unknown architecture (known: resnet, vgg, mobilenet_v2, shufflenet_v2)");
  r.expansion = model.get("expansion", r.expansion);
  r.arch.depth = model.get("depth", r.arch.depth);
  r.arch.width = model.get("width", r.arch.width);
  r.arch.in_channels = model.get("in_channels", r.arch.in_channels);
  r.arch.num_classes = model.get("num_classes", r.arch.num_classes);
  const ConfigNode data = root["data"];
  data.check_keys({"source", "dir", "mean", "std", "input_size"});
  r.dataset = data["source"].as_string();
  if (!is_known_dataset(r.dataset) || !is_labeled_dataset(r.dataset))
    data["source"].fail("expected a labeled dataset (fashion_mnist, opencv_digits, sklearn_digits, folder:PATH)");
  if (r.dataset.rfind("folder:", 0) == 0) r.dataset = "folder:" + (base / r.dataset.substr(7)).string();
  r.data_dir = data.get("dir", "");
  if (data.has("input_size")) {
    const auto size = data["input_size"].as_int_list();
    if (size.size() != 2) data["input_size"].fail("expected [height, width]");
    r.height = size[0];
    r.width = size[1];
  }
  if (data.has("mean")) r.preprocess.mean = data["mean"].as_double_list();
  if (data.has("std")) r.preprocess.std = data["std"].as_double_list();
  const ConfigNode train = root["train"];
  train.check_keys({"epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "crop_padding", "hflip"});
  r.epochs = train.get("epochs", r.epochs);
  r.batch_size = train.get("batch_size", r.batch_size);
  r.lr = train.get("lr", r.lr);
  r.momentum = train.get("momentum", r.momentum);
  r.nesterov = train.get("nesterov", r.nesterov);
  r.weight_decay = train.get("weight_decay", r.weight_decay);
  r.crop_padding = train.get("crop_padding", r.crop_padding);
  r.hflip = train.get("hflip", r.hflip);
  if (r.epochs < 1) train["epochs"].fail("expected an integer >= 1");
  if (r.batch_size < 1) train["batch_size"].fail("expected an integer >= 1");
  r.seed = static_cast<std::uint64_t>(root.get("seed", 0LL));
  r.threads = root.get("threads", 0);
  r.output = (base / root["output"].as_string()).string();
  r.log = (base / root.get("log", "train.log")).string();
  return r;
}

// Random crop (zero padding) and horizontal flip, per image, with the recipe's generator.
at::Tensor augment(const at::Tensor& batch, int padding, bool hflip, at::Generator& gen) {
  const auto n = batch.size(0), h = batch.size(2), w = batch.size(3);
  at::Tensor out = at::empty_like(batch);
  at::Tensor padded = padding > 0 ? at::constant_pad_nd(batch, {padding, padding, padding, padding}, 0.0) : batch;
  at::Tensor offsets = at::randint(0, 2 * padding + 1, {n, 2}, gen, at::kLong);
  at::Tensor flips = at::randint(0, 2, {n}, gen, at::kLong);
  auto off = offsets.accessor<std::int64_t, 2>();
  auto flip = flips.accessor<std::int64_t, 1>();
  for (std::int64_t i = 0; i < n; ++i) {
    at::Tensor crop = padded[i].narrow(1, off[i][0], h).narrow(2, off[i][1], w);
    out[i].copy_(hflip && flip[i] ? crop.flip({2}) : crop);
  }
  return out;
}

// One epoch of SGD with a per-step cosine learning rate (Loshchilov & Hutter 2017, no restarts); returns
// the mean training loss and counts correct predictions.
double train_epoch(torch::jit::Module& net, torch::optim::SGD& sgd, const Recipe& r, const Dataset& train,
                   at::Generator& gen, std::int64_t& step, std::int64_t total_steps, std::int64_t& correct) {
  net.train(true);
  at::Tensor order = at::randperm(train.size(), gen, at::kLong);
  double loss_sum = 0.0;
  correct = 0;
  for (std::int64_t b = 0; b < train.size(); b += r.batch_size, ++step) {
    const double lr = 0.5 * r.lr * (1.0 + std::cos(M_PI * static_cast<double>(step) / total_steps));
    for (auto& group : sgd.param_groups()) static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
    at::Tensor idx = order.slice(0, b, std::min(train.size(), b + r.batch_size));
    at::Tensor x = augment(train.images.index_select(0, idx), r.crop_padding, r.hflip, gen);
    at::Tensor y = train.labels.index_select(0, idx);
    at::Tensor logits = net.forward({r.preprocess.apply(x)}).toTensor();
    at::Tensor loss = at::cross_entropy_loss(logits, y);
    sgd.zero_grad();
    loss.backward();
    sgd.step();
    loss_sum += loss.item<double>() * static_cast<double>(idx.size(0));
    correct += logits.argmax(1).eq(y).sum().item<std::int64_t>();
  }
  return loss_sum;
}

torch::jit::Module make_network(const Recipe& r) {
  const zoo::ResNetSpec& a = r.arch;
  torch::jit::Module net = r.arch_name == "vgg"            ? zoo::make_vgg({a.width, a.in_channels, a.num_classes}, r.seed)
                           : r.arch_name == "mobilenet_v2" ? zoo::make_mobilenet_v2({a.width, r.expansion, a.in_channels, a.num_classes}, r.seed)
                           : r.arch_name == "shufflenet_v2" ? zoo::make_shufflenet_v2({a.width, a.in_channels, a.num_classes}, r.seed)
                                                            : zoo::make_resnet(a, r.seed);
  zoo::set_input_normalization(net, r.preprocess.mean, r.preprocess.std);
  return net;
}

}  // namespace

TrainSummary train_from_recipe(const std::string& recipe_path, const std::vector<std::string>& overrides) {
  ConfigNode root = ConfigNode::load_file(recipe_path);
  for (const auto& kv : overrides) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos) throw Error("--set " + kv + ": expected key=value");
    root.set_path(kv.substr(0, eq), kv.substr(eq + 1));
  }
  const Recipe r = parse_recipe(root, std::filesystem::path(recipe_path).parent_path());
  const int threads = apply_thread_count(r.threads);

  DataLocations where;
  where.fashion_mnist = r.data_dir;
  const InputShape shape{r.arch.in_channels, r.height, r.width};
  const Dataset train = load_dataset(r.dataset, Split::Train, where, shape, 0, r.seed);
  const Dataset test = load_dataset(r.dataset, Split::Test, where, shape, 0, r.seed);

  at::manual_seed(r.seed);
  at::Generator gen = at::detail::createCPUGenerator(r.seed);
  torch::jit::Module net = make_network(r);
  std::vector<at::Tensor> params;
  for (const auto& p : net.parameters()) {
    p.requires_grad_(true);
    params.push_back(p);
  }
  torch::optim::SGD sgd(params, torch::optim::SGDOptions(r.lr).momentum(r.momentum).nesterov(r.nesterov).weight_decay(r.weight_decay));

  std::ofstream log(r.log);
  if (!log) throw Error(r.log + ": cannot write training log");
  auto say = [&](const std::string& line) {
    std::cout << line << std::endl;
    log << line << std::endl;
  };
  say("recipe " + recipe_path + " | seed " + std::to_string(r.seed) + " | threads " + std::to_string(threads) +
      " | train " + std::to_string(train.size()) + " test " + std::to_string(test.size()));

  auto forward = [&](const at::Tensor& x) { return net.forward({x}).toTensor(); };
  const std::int64_t steps_per_epoch = (train.size() + r.batch_size - 1) / r.batch_size;
  const std::int64_t total_steps = steps_per_epoch * r.epochs;
  const auto start = std::chrono::steady_clock::now();
  double test_top1 = 0.0;
  std::int64_t step = 0;
  for (int epoch = 1; epoch <= r.epochs; ++epoch) {
    const auto epoch_start = std::chrono::steady_clock::now();
    std::int64_t correct = 0;
    const double loss_sum = train_epoch(net, sgd, r, train, gen, step, total_steps, correct);
    net.eval();
    test_top1 = top1_accuracy(forward, TestImages(test), r.preprocess);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    std::ostringstream line;
    line << std::fixed << std::setprecision(4) << "epoch " << epoch << "/" << r.epochs
         << " loss " << loss_sum / train.size() << " train_top1 " << static_cast<double>(correct) / train.size()
         << " test_top1 " << test_top1 << " seconds " << std::setprecision(1) << secs;
    say(line.str());
  }
  for (const auto& p : net.parameters()) p.requires_grad_(false);
  std::filesystem::create_directories(std::filesystem::path(r.output).parent_path());
  const std::string tmp = r.output + ".tmp";
  net.save(tmp);
  std::filesystem::rename(tmp, r.output);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::ostringstream done;
  done << std::fixed << std::setprecision(4) << "saved " << r.output << " test_top1 " << test_top1
       << " total_seconds " << std::setprecision(1) << total;
  say(done.str());
  return {test_top1, total, r.output};
}

}  // namespace xdq
