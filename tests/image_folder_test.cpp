// Real-size data: the resize/crop geometry against closed forms, ImageNet-layout folders (classes file,
// bad files), streamed test sets against the same images in memory, and torchvision's evaluation
// transform + model in PyTorch against xdq's folder pipeline.
#include <algorithm>
#include <atomic>
#include <iostream>
#include <sstream>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>
#include <torch/csrc/jit/serialization/import.h>

#include "test_util.h"
#include "xdq/data/image_files.h"
#include "xdq/data/sources.h"
#include "xdq/data/test_images.h"
#include "xdq/exec/executor.h"
#include "xdq/ir/import.h"
#include "xdq/report/png.h"

using namespace xdq;

namespace {

void write_png(const std::string& path, const at::Tensor& image) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << render_grid_png(image.unsqueeze(0), 1, 1);
}

InputShape resized(std::int64_t channels, std::int64_t crop_h, std::int64_t crop_w, std::int64_t resize,
                   Interpolation interpolation = Interpolation::Bilinear) {
  InputShape s;
  s.channels = channels;
  s.height = crop_h;
  s.width = crop_w;
  s.resize = resize;
  s.interpolation = interpolation;
  return s;
}

// Antialiased bilinear downscaling by exactly 2 (one axis): output i reads inputs 2i-1 .. 2i+2 with the
// triangle filter of half-width 2 at their centers' distances 1.5, 0.5, 0.5, 1.5 -> weights 1, 3, 3, 1
// (/8); at a border the missing tap's weight is dropped and the rest renormalized.
std::vector<double> halve(const std::vector<double>& x) {
  std::vector<double> y;
  const int n = static_cast<int>(x.size());
  for (int i = 0; i < n / 2; ++i) {
    double sum = 0, weight = 0;
    const int taps[4] = {2 * i - 1, 2 * i, 2 * i + 1, 2 * i + 2};
    const double w[4] = {1, 3, 3, 1};
    for (int t = 0; t < 4; ++t)
      if (taps[t] >= 0 && taps[t] < n) {
        sum += w[t] * x[taps[t]];
        weight += w[t];
      }
    y.push_back(sum / weight);
  }
  return y;
}

at::Tensor holder_tensor(const std::string& path) { return torch::jit::load(path).attr("t").toTensor(); }

}  // namespace

TEST(Geometry, ShorterSideResizeIsTheClosedFormTriangleFilter) {
  // A 1x8x12 image varying along the width only; the shorter side (8) becomes 4, the longer 12 -> 6.
  at::Tensor image = at::empty({1, 1, 8, 12});
  std::vector<double> row;
  for (int j = 0; j < 12; ++j) row.push_back(std::sin(0.7 * j) + 0.1 * j * j / 12.0);
  for (int j = 0; j < 12; ++j) image.select(3, j).fill_(row[j]);
  const at::Tensor out = fit_to_input(image, resized(1, 4, 6, 4));
  ASSERT_EQ(out.sizes(), (std::vector<std::int64_t>{1, 1, 4, 6}));
  const std::vector<double> expected = halve(row);
  for (int j = 0; j < 6; ++j)
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(out[0][0][i][j].item<double>(), expected[j], 1e-6) << j;
}

TEST(Geometry, CenterCropRoundsHalfToEvenAndPadsSmallImages) {
  // Width 7, crop 4: offset (7 - 4) / 2 = 1.5 rounds to 2 (Python's round); width 5: 0.5 rounds to 0.
  const at::Tensor seven = at::arange(7, at::kFloat).view({1, 1, 1, 7}).expand({1, 1, 4, 7}).contiguous();
  EXPECT_EQ(fit_to_input(seven, resized(1, 4, 4, 4, Interpolation::Nearest))[0][0][0][0].item<float>(), 2.0f);
  const at::Tensor five = at::arange(5, at::kFloat).view({1, 1, 1, 5}).expand({1, 1, 4, 5}).contiguous();
  EXPECT_EQ(fit_to_input(five, resized(1, 4, 4, 4, Interpolation::Nearest))[0][0][0][0].item<float>(), 0.0f);
  // A 2x2 image into a 4x4 crop without resizing it (resize = its own shorter side): zero border of 1.
  const at::Tensor small = at::ones({1, 1, 2, 2});
  const at::Tensor padded = fit_to_input(small, resized(1, 4, 4, 2));
  EXPECT_EQ(padded.sum().item<float>(), 4.0f);
  EXPECT_EQ(padded[0][0][1][1].item<float>(), 1.0f);
  EXPECT_EQ(padded[0][0][0][0].item<float>(), 0.0f);
  // BGR: the channels reversed.
  InputShape bgr = resized(3, 2, 2, 2);
  bgr.bgr = true;
  const at::Tensor rgb = at::arange(3, at::kFloat).view({1, 3, 1, 1}).expand({1, 3, 2, 2}).contiguous();
  EXPECT_TRUE(fit_to_input(rgb, bgr).select(1, 0).eq(2.0f).all().item<bool>());
}

// A folder of 3 classes x 6 constant images (class c, image k: value (10c + k) / 40) without train/val.
class Folder : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int c = 0; c < 3; ++c)
      for (int k = 0; k < 6; ++k)
        write_png(dir.file(cls[c] + "/" + std::to_string(k) + (k == 5 ? ".PNG" : ".png")),
                  at::full({1, 6, 6}, (10.0f * c + k) / 40.0f));
  }
  test::TempDir dir;
  const std::string cls[3] = {"b", "a", "c"};
};

TEST_F(Folder, ClassesFileGivesTheIndicesAndNamesEveryMistake) {
  test::write_text(dir.file("classes.txt"), "z\nb\na\nc\n");
  FolderOptions o;
  o.classes_file = dir.file("classes.txt");
  EXPECT_NE(test::error_of([&] { list_image_folder(dir.path().string(), Split::Test, o); }).find("classes.txt:1: class 'z' has no folder"),
            std::string::npos);
  o.allow_missing_classes = true;
  const ImageFileList test = list_image_folder(dir.path().string(), Split::Test, o);
  // Every fifth image of a class (k = 4, upper-case .PNG included in the count) in class-index order.
  ASSERT_EQ(test.files.size(), 3u);
  EXPECT_EQ(test.labels, (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(std::filesystem::path(test.files[0]).filename(), "4.png");
  EXPECT_EQ(std::filesystem::path(test.files[0]).parent_path().filename(), "b");
  EXPECT_EQ(list_image_folder(dir.path().string(), Split::Train, o).files.size(), 15u);
  test::write_text(dir.file("classes.txt"), "b\na\n");
  EXPECT_NE(test::error_of([&] { list_image_folder(dir.path().string(), Split::Test, o); }).find("/c: class folder not listed in"),
            std::string::npos);
  test::write_text(dir.file("classes.txt"), "b\n\na\nc\n");
  EXPECT_NE(test::error_of([&] { list_image_folder(dir.path().string(), Split::Test, o); }).find("classes.txt:2: empty line"),
            std::string::npos);
  std::filesystem::create_directories(dir.path() / "d");
  EXPECT_NE(test::error_of([&] { list_image_folder(dir.path().string(), Split::Test, {}); }).find("/d: class folder holds no"),
            std::string::npos);
}

TEST_F(Folder, CorruptImageIsAnErrorNamingItOrSkippedWithCount) {
  test::write_text(dir.file("a/3.png"), "not a png");
  const ImageFileList list = list_image_folder(dir.path().string(), Split::Train, {});
  const at::Tensor rows = subset_rows(static_cast<std::int64_t>(list.files.size()), 0, 0);
  const std::string e = test::error_of([&] { load_image_files(list, rows, {1, 6, 6}, false); });
  EXPECT_NE(e.find(dir.file("a/3.png") + ": cannot read image"), std::string::npos) << e;
  const Dataset kept = load_image_files(list, rows, {1, 6, 6}, true);
  EXPECT_EQ(kept.size(), 14);
  EXPECT_EQ(kept.labels.eq(0).sum().item<std::int64_t>(), 4);  // class "a" (sorted: a, b, c) lost one
  // Streamed: the error surfaces from the decoding thread; skipped files shrink the set after a pass.
  TestImages stream("t", list, rows, {1, 6, 6}, false, {});
  EXPECT_NE(test::error_of([&] { stream.for_each_batch(4, [](const at::Tensor&, const at::Tensor&) {}); }).find("a/3.png"),
            std::string::npos);
  TestImages skipping("t", list, rows, {1, 6, 6}, true, {});
  std::int64_t seen = 0;
  skipping.for_each_batch(4, [&](const at::Tensor& x, const at::Tensor&) { seen += x.size(0); });
  EXPECT_EQ(seen, 14);
  EXPECT_EQ(skipping.size(), 14);
  EXPECT_EQ(skipping.labels().size(0), 14);
}

TEST_F(Folder, StreamedBatchesEqualTheSetInMemory) {
  const ImageFileList list = list_image_folder(dir.path().string(), Split::Train, {});
  const at::Tensor rows = subset_rows(static_cast<std::int64_t>(list.files.size()), 11, 5);
  const Dataset memory = load_image_files(list, rows, {1, 4, 4}, false);
  // The transform sees each batch with its first row: adds first / 100 so the order is checked too.
  std::atomic<int> calls{0};
  TestImages stream("t", list, rows, {1, 4, 4}, false, [&](const at::Tensor& x, std::int64_t first) {
    ++calls;
    return x + static_cast<double>(first) / 100.0;
  });
  EXPECT_EQ(stream.size(), 11);
  EXPECT_TRUE(stream.labels().equal(memory.labels));
  std::vector<at::Tensor> images, labels;
  stream.for_each_batch(3, [&](const at::Tensor& x, const at::Tensor& y) {
    images.push_back(x);
    labels.push_back(y);
  });
  ASSERT_EQ(images.size(), 4u);
  EXPECT_EQ(calls.load(), 4);
  for (std::int64_t b = 0; b < 4; ++b)
    EXPECT_TRUE(at::allclose(images[b], memory.images.slice(0, 3 * b, std::min<std::int64_t>(11, 3 * b + 3)) + 0.03 * b));
  EXPECT_TRUE(at::cat(labels).equal(memory.labels));
  EXPECT_TRUE(stream.head(5).labels.equal(memory.labels.slice(0, 0, 5)));
  // The consumer failing mid-way stops the decoding thread (no hang) and its error comes out.
  EXPECT_EQ(test::error_of([&] {
              stream.for_each_batch(2, [](const at::Tensor&, const at::Tensor&) { throw Error("evaluation failed"); });
            }),
            "evaluation failed");
}

// torchvision models with random weights (tests/fixtures/make_imagenet_folder.py): PyTorch's logits after
// torchvision's Resize(256, antialias) + CenterCrop(224) + Normalize, against xdq's folder pipeline.
TEST(ImageFolder, TorchvisionEvaluationMatchesPyTorch) {
  const std::string dir = XDQ_IMAGENET_DIR;
  ASSERT_TRUE(std::filesystem::is_regular_file(dir + "/synsets.txt")) << "fixture missing (ctest runs make_imagenet_folder)";
  FolderOptions options;
  options.classes_file = dir + "/synsets.txt";
  options.allow_missing_classes = true;
  const Preprocess imagenet{{0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}};
  for (const char* name : {"resnet18", "mobilenet_v2", "efficientnet_b0", "regnet_x_400mf"}) {
    ImageFileList list = list_image_folder(dir + "/" + name, Split::Test, options);
    const auto n = static_cast<std::int64_t>(list.files.size());
    const TestImages val(name, std::move(list), subset_rows(n, 0, 0), resized(3, 224, 224, 256), false, {});
    const Executor model(import_torchscript(dir + "/" + name + ".pt").graph);
    std::vector<at::Tensor> logits;
    val.for_each_batch(4, [&](const at::Tensor& x, const at::Tensor&) { logits.push_back(model.forward(imagenet.apply(x))); });
    const at::Tensor got = at::cat(logits), expected = holder_tensor(dir + "/" + name + ".logits.pt");
    ASSERT_EQ(got.sizes(), expected.sizes()) << name;
    const double error = test::max_relative_error(got, expected);
    std::cout << name << ": " << n << " images, max relative logit error " << error << "\n";
    EXPECT_LE(error, 1e-4) << name;
    EXPECT_TRUE(got.argmax(1).equal(val.labels())) << name;  // the folder's labels are PyTorch's argmax
  }
}

// `xdq run` on an ImageNet-layout folder: preprocess imagenet, a classes file, a streamed test split.
class ImageFolderCli : public ::testing::Test {
 protected:
  std::string experiment(const std::string& folder, const std::string& model_extra = "",
                         const std::string& domain_extra = ", missing_classes: allow") const {
    const std::string data = XDQ_IMAGENET_DIR;
    return "experiment: imagenet_cli\nseed: 0\nthreads: 2\nmodels:\n  - name: resnet18\n    path: " + data +
           "/resnet18.pt\n    preprocess: imagenet" + model_extra + "\ndomains:\n  val: {dataset: 'folder:" + folder +
           "', classes: " + data + "/synsets.txt" + domain_extra +
           "}\ncalibration:\n  source: val\n  count: 4\n  batch_size: 4\ntest:\n  domains: [val]\nquantization:\n"
           "  preset: academic\n  bits: [w8a8]\n  calibrators: [minmax]\n  rounding: [nearest]\n";
  }
  test::CommandResult run(const std::string& text) {
    test::write_text(dir.file("exp.yaml"), text);
    return test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("exp.yaml") + " --out " + dir.file("out"));
  }
  // A folder `name` whose train and val splits are both the fixture's 12 val images.
  std::string val_as_train(const std::string& name) const {
    const std::string data = XDQ_IMAGENET_DIR, folder = dir.file(name);
    for (const char* split : {"train", "val"}) {
      std::filesystem::create_directories(folder + "/" + split);
      std::filesystem::copy(data + "/resnet18/val", folder + "/" + split, std::filesystem::copy_options::recursive);
    }
    return folder;
  }
  // The start of an experiment `name` (its own cache) that tests ResNet-18 on the fixture's val folder and
  // calibrates on domain `cal`: `folder` with `cal_options`.
  std::string val_and_cal(const std::string& name, const std::string& folder, const std::string& cal_options) const {
    const std::string data = XDQ_IMAGENET_DIR;
    return "experiment: " + name + "\nseed: 0\nthreads: 2\ndata: {cache: " + dir.file(name + "_cache") +
           "}\nmodels:\n  - {name: resnet18, path: " + data + "/resnet18.pt, preprocess: imagenet}\ndomains:\n"
           "  val: {dataset: 'folder:" + data + "/resnet18', classes: " + data + "/synsets.txt, missing_classes: allow}\n"
           "  cal: {dataset: 'folder:" + folder + "'" + cal_options + "}\n";
  }
  // `xdq run` of `text` as experiment `name` into the folder `name`: its results.json, and its output.
  std::pair<nlohmann::json, std::string> run_named(const std::string& name, const std::string& text) const {
    test::write_text(dir.file(name + ".yaml"), text);
    const test::CommandResult r =
        test::run_command(std::string(XDQ_BINARY) + " run " + dir.file(name + ".yaml") + " --out " + dir.file(name));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return {nlohmann::json::parse(test::read_text(dir.file(name + "/results.json"))), r.output};
  }
  void expect_refused(const test::CommandResult& r, const std::string& message) {
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
    EXPECT_FALSE(std::filesystem::exists(dir.file("out/results.json"))) << "partial output left behind";
  }
  test::TempDir dir;
};

TEST_F(ImageFolderCli, FolderLabelledByTheModelGivesFp32TopOneOfExactlyOne) {
  const std::string folder = std::string(XDQ_IMAGENET_DIR) + "/resnet18";
  const test::CommandResult r = run(experiment(folder));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(test::read_text(dir.file("out/results.json")));
  const auto& result = j["runs"][0]["results"][0];
  std::int64_t files = 0;
  for (const auto& f : std::filesystem::recursive_directory_iterator(folder + "/val")) files += f.is_regular_file();
  EXPECT_EQ(result["n"].get<std::int64_t>(), files);
  EXPECT_EQ(result["fp32_top1"].get<double>(), 1.0);
  EXPECT_EQ(j["runs"][0]["calibration"]["source"], "folder:" + folder + ".train");
}

TEST_F(ImageFolderCli, BadFoldersAndSizesAreRefusedByName) {
  const std::string data = XDQ_IMAGENET_DIR;
  // The classes file lists 1 000 synsets; the folder holds a few.
  expect_refused(run(experiment(data + "/resnet18", "", "")),
                 "exp.yaml:9 domains.val.dataset: " + data + "/synsets.txt:1: class 'n01000000' has no folder");
  // The crop contradicts the input size the model file declares.
  expect_refused(run(experiment(data + "/resnet18", "\n    input_size: [192, 192]")),
                 "exp.yaml:7 models[0].preprocess: input size 224x224 contradicts the declared 192x192");
  std::string own_size = experiment(data + "/resnet18", "\n    input_size: [192, 192]");
  own_size.replace(own_size.find("preprocess: imagenet"), 20, "mean: [0.5]\n    std: [0.5]");
  expect_refused(run(own_size),
                 "models[0].input_size: model 'resnet18' feeds 192x192 images, but " + data +
                     "/resnet18.pt declares input_size 224x224");
  // A corrupt JPEG in the test split: named, nothing written.
  const std::string copy = dir.file("copy");
  std::filesystem::copy(data + "/resnet18", copy, std::filesystem::copy_options::recursive);
  std::string victim;
  for (const auto& f : std::filesystem::recursive_directory_iterator(copy + "/val"))
    if (f.path().extension() == ".jpg") victim = f.path().string();
  ASSERT_FALSE(victim.empty());
  test::write_text(victim, "\xff\xd8 truncated");
  expect_refused(run(experiment(copy)), victim + ": cannot read image");
  // unreadable: skip leaves it out and says so.
  const test::CommandResult skipped = run(experiment(copy, "", ", missing_classes: allow, unreadable: skip"));
  ASSERT_EQ(skipped.exit_code, 0) << skipped.output;
  const auto j = nlohmann::json::parse(test::read_text(dir.file("out/results.json")));
  std::int64_t files = 0;
  for (const auto& f : std::filesystem::recursive_directory_iterator(copy + "/val")) files += f.is_regular_file();
  EXPECT_EQ(j["runs"][0]["results"][0]["n"].get<std::int64_t>(), files - 1);
  EXPECT_NE(test::read_text(dir.file("out/run.log")).find("1 unreadable image file(s) left out"), std::string::npos);
}

// The shipped 224x224 experiment, pointed at the fixture: both models, both domains, the streamed tests.
TEST_F(ImageFolderCli, ShippedExperimentRunsOnTheFixture) {
  std::string command = std::string(XDQ_BINARY) + " run " + XDQ_SOURCE_DIR + "/experiments/imagenet_folder.yaml --out " +
                        dir.file("out") + " --set calibration.count=4 --set threads=2";  // the fixture's train split
  for (const std::string& set : test::imagenet_fixture_sets()) command += " --set '" + set + "'";
  const test::CommandResult r = test::run_command(command);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(test::read_text(dir.file("out/results.json")));
  ASSERT_EQ(j["runs"].size(), 8u);  // 2 models x 2 bit settings x 2 calibrators
  for (const auto& run : j["runs"]) {
    ASSERT_EQ(run["results"].size(), 2u);
    if (run["model"] == "resnet18") EXPECT_EQ(run["results"][0]["fp32_top1"].get<double>(), 1.0);  // its own labels
    EXPECT_EQ(run["results"][1]["domain"], "imagenet_night");
  }
}

// A folder calibration set is streamed, decoded batch by batch, when it exceeds stream_above_mb (0 here)
// unless unreadable files are skipped (then it is loaded in memory, as every other domain is): the two
// give the same statistics (byte for byte),
// the same observers, graph passes, rounding and reconstruction losses, and the same top-1.
TEST_F(ImageFolderCli, StreamedCalibrationGivesTheInMemoryResults) {
  const std::string folder = val_as_train("calibration");  // a train split of 3 batches
  const auto run_with = [&](const std::string& name, const std::string& calibration_domain) {
    return run_named(name, val_and_cal(name, folder, calibration_domain) +
        "calibration: {source: cal, count: 12, batch_size: 4, stream_above_mb: 0}\n"
        "test: {domains: [val]}\nquantization:\n  bits: [w4a8]\n  calibrators: [minmax, ema_minmax]\n"
        "  passes: [{name: bn_reestimate, batch_size: 4}, {name: bias_correction, images: 8, batch_size: 4}]\n"
        "  rounding: [{name: brecq, iters: 2, act_iters: 2, batch_size: 4, record_every: 1}]\n").first;
  };
  const auto in_memory = run_with("memory", ", unreadable: skip"), streamed = run_with("streamed", "");
  ASSERT_EQ(in_memory["runs"].size(), 2u);
  ASSERT_EQ(streamed["runs"].size(), 2u);
  for (std::size_t r = 0; r < 2; ++r)
    EXPECT_EQ(in_memory["runs"][r]["results"][0]["quant_top1"], streamed["runs"][r]["results"][0]["quant_top1"]) << r;
  // The statistics file: named by the hash of graph and images, the same bytes.
  const auto statistics = [&](const std::string& name) {
    std::vector<std::string> files;
    for (const auto& f : std::filesystem::directory_iterator(dir.file(name + "_cache/statistics"))) files.push_back(f.path().filename());
    EXPECT_EQ(files.size(), 1u) << name;
    return files.empty() ? std::string() : test::read_text(dir.file(name + "_cache/statistics/" + files[0])) + files[0];
  };
  EXPECT_EQ(statistics("memory"), statistics("streamed"));
  // Reconstruction losses, iteration by iteration (the timing columns aside).
  for (const char* calibrator : {"minmax", "ema_minmax"}) {
    const auto losses = [&](const std::string& name) {
      std::istringstream csv(test::read_text(dir.file(name + "/resnet18_w4a8_" + calibrator + "_brecq_curves.csv")));
      std::string out;
      for (std::string line; std::getline(csv, line);) {
        std::size_t cut = line.size();
        for (int k = 0; k < 2; ++k) cut = line.rfind(',', cut - 1);
        out += line.substr(0, cut) + "\n";
      }
      return out;
    };
    const std::string expected = losses("memory");
    EXPECT_GT(std::count(expected.begin(), expected.end(), '\n'), 10);
    EXPECT_EQ(losses("streamed"), expected) << calibrator;
  }
}

// A selector's pool streamed from the folder's files chooses what the same pool in memory chooses: the same
// rows (the measures of the chosen set, the calibration hash) and the same top-1.
TEST_F(ImageFolderCli, StreamedSelectionPoolChoosesAsInMemory) {
  const std::string folder = val_as_train("pool");
  const auto run_with = [&](const std::string& name, const std::string& options) {
    return run_named(name, val_and_cal(name, folder, options) +
        "calibration: {source: cal, count: 4, pool_size: 0, batch_size: 5, stream_above_mb: 0, selector: [bn_match, kcenter]}\n"
        "test: {domains: [val]}\nquantization: {bits: [w4a8], calibrators: [minmax]}\n");
  };
  const auto [in_memory, memory_log] = run_with("memory", ", unreadable: skip");
  const auto [streamed, streamed_log] = run_with("streamed", "");
  EXPECT_NE(streamed_log.find("12 images, decoded from its files"), std::string::npos) << streamed_log;
  EXPECT_EQ(memory_log.find("decoded from its files"), std::string::npos) << memory_log;
  ASSERT_EQ(in_memory["runs"].size(), 2u);
  ASSERT_EQ(streamed["runs"].size(), 2u);
  for (std::size_t r = 0; r < 2; ++r) {
    EXPECT_EQ(streamed["runs"][r]["calibration"]["selection"]["pool_size"], 12) << r;
    EXPECT_EQ(streamed["runs"][r]["calibration"]["selection"]["measures"], in_memory["runs"][r]["calibration"]["selection"]["measures"]) << r;
    EXPECT_FALSE(in_memory["runs"][r]["calibration"]["selection"]["measures"].empty()) << r;
    EXPECT_EQ(streamed["runs"][r]["results"][0]["quant_top1"], in_memory["runs"][r]["results"][0]["quant_top1"]) << r;
  }
  const auto hashes = [&](const std::string& name) {
    const YAML::Node sets = YAML::LoadFile(dir.file(name + "/config.resolved.yaml"))["provenance"]["calibration_sets"];
    std::vector<std::string> out;
    for (const auto& set : sets) out.push_back(set["hash"].as<std::string>());
    return out;
  };
  EXPECT_EQ(hashes("streamed").size(), 2u);
  EXPECT_EQ(hashes("streamed"), hashes("memory"));
}

// A calibration set read from a folder (load_dataset, in memory) holds the images a streamed test set of
// the same rows gives: the geometry (resize, crop, BGR order) applied once.
TEST(FolderGeometry, CalibrationSetsAndStreamedSetsDecodeAlike) {
  test::TempDir dir;
  for (int k = 0; k < 10; ++k) {  // 9x13 colour images: a ramp along the width, a different level per channel
    const at::Tensor ramp = at::linspace(0, 1, 13).view({1, 1, 13}).expand({3, 9, 13});
    const at::Tensor levels = at::tensor({0.1f * (k % 5), 0.5f, 0.9f - 0.1f * (k % 5)}).view({3, 1, 1});
    write_png(dir.file(std::string(k < 5 ? "a" : "b") + "/" + std::to_string(k) + ".png"), (ramp * 0.5 + levels * 0.5).contiguous());
  }
  InputShape shape = resized(3, 4, 4, 6);
  shape.bgr = true;
  const Dataset memory = load_dataset("folder:" + dir.path().string(), Split::Train, DataLocations(), shape, 6, 3);
  const ImageFileList list = list_image_folder(dir.path().string(), Split::Train, {});
  const TestImages stream("t", list, subset_rows(static_cast<std::int64_t>(list.files.size()), 6, 3), shape, false, {});
  const Dataset head = stream.head(6);
  ASSERT_EQ(memory.images.sizes(), (std::vector<std::int64_t>{6, 3, 4, 4}));
  EXPECT_TRUE(memory.images.equal(head.images));
  EXPECT_TRUE(memory.labels.equal(head.labels));
  // BGR once: channel 0 holds the blue level (the highest of the image's three at column 0).
  EXPECT_GT(memory.images.select(1, 0).mean().item<float>(), memory.images.select(1, 2).mean().item<float>());
}
