#pragma once
// A quantized model as its rounding optimizer sees it: the layers whose weights it rounds, the calibrated
// activation quantizers, and what it may read (calibration images) or hand back (report files).
#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "xdq/ir/graph.h"
#include "xdq/quant/calibration_images.h"
#include "xdq/quant/quantizer.h"
#include "xdq/quant/unit_timing.h"

namespace xdq {

struct QuantizedLayer {
  int node = -1;              // conv/linear node in the graph
  QuantSpec spec;
  QParams qparams;            // weight scale/zero-point (from the weight range method)
  at::Tensor quantized_weight;  // output: fake-quantized weight the quantized model will use
};

// A quantizer on a value that conv/linear layers read (the model input included).
struct ActivationQuantizer {
  int value = -1;
  std::string name;  // the first layer reading it, e.g. "layer1.block0.conv1:input"
  QuantSpec spec;
  Range range;
  QParams qparams;
};

struct RoundingContext {
  const Graph* graph = nullptr;           // BN-folded FP graph
  std::vector<QuantizedLayer>* layers = nullptr;
  std::vector<ActivationQuantizer>* activations = nullptr;  // calibrated; optimizers may learn their steps
  CalibrationImages calibration;          // preprocessed calibration images, read batch by batch, on the CPU
  c10::Device device{c10::kCPU};          // where the graph's tensors are; an Executor moves its inputs there
  std::uint64_t seed = 0;
  std::ostream* progress = nullptr;       // progress lines (may be null)
  std::map<std::string, std::string>* files = nullptr;  // report files to write, name -> bytes (may be null)
  std::string run_name;                   // unique per run, a prefix for those file names
  std::vector<UnitTiming>* timings = nullptr;  // filled by unit-by-unit optimizers (may be null)
};

}  // namespace xdq
