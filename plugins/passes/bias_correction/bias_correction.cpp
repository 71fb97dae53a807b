// bias_correction, empirical (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
// Correction", ICCV 2019, section 4.2 with data; AIMET's empirical bias correction): after rounding, the
// quantized model's layers shift their outputs' means. Layer by layer in graph order, the mean over
// calibration images (and positions) of each output channel is measured in the FP model and in the
// quantized model (weights and activation quantizers, earlier layers already corrected), and the
// difference is added to the layer's bias, so every layer's mean output matches the FP model's on
// that data.
#include "xdq/error.h"
#include "xdq/plugin/graph_run.h"
#include "xdq/plugin/interfaces.h"

namespace {

at::Tensor channel_mean(const at::Tensor& y) {
  std::vector<std::int64_t> dims{0};
  for (std::int64_t d = 2; d < y.dim(); ++d) dims.push_back(d);
  return y.mean(dims);
}

class BiasCorrection : public xdq::GraphPass {
 public:
  BiasCorrection(std::int64_t images, std::int64_t batch_size) : images_(images), batch_size_(batch_size) {}

  xdq::PassStage stage() const override { return xdq::PassStage::AfterRounding; }

  void run(xdq::Graph& graph, const xdq::PassContext& context) const override {
    if (!context.layers || !context.activations)
      throw xdq::Error("bias_correction runs on a quantized model (after rounding), not on the FP graph");
    if (context.calibration.empty())
      throw xdq::Error("bias_correction (empirical) needs calibration images");
    const xdq::CalibrationImages images = context.calibration.head(images_);  // read again for every layer
    std::vector<int> outputs;
    for (const auto& layer : *context.layers) outputs.push_back(graph.nodes[layer.node].outputs[0]);
    const std::vector<at::Tensor> fp_means = means(xdq::GraphRun(graph), images, outputs, static_cast<int>(graph.nodes.size()));

    for (std::size_t l = 0; l < context.layers->size(); ++l) {
      const int node = (*context.layers)[l].node;
      xdq::GraphRun quantized(graph);
      for (const auto& layer : *context.layers) quantized.set_weight(layer.node, layer.quantized_weight);
      for (const auto& act : *context.activations) {
        if (act.value == outputs[l]) continue;  // the mean before this output's own quantizer
        quantized.fake_quantize(act.value, act.qparams);
      }
      const at::Tensor shift = fp_means[l] - means(quantized, images, {outputs[l]}, node + 1)[0];
      xdq::Node& n = graph.nodes[node];
      n.bias = n.bias.defined() ? n.bias + shift : shift;
    }
  }

 private:
  // Per-channel means of `values` over the images, running nodes [0, upto).
  std::vector<at::Tensor> means(const xdq::GraphRun& run, const xdq::CalibrationImages& images,
                                const std::vector<int>& values, int upto) const {
    std::vector<at::Tensor> sums(values.size());
    images.for_each_batch(batch_size_, [&](const at::Tensor& x, std::int64_t) {
      const auto got = run.values(x, values, upto);
      for (std::size_t k = 0; k < values.size(); ++k) {
        const at::Tensor s = channel_mean(got[k].to(at::kDouble)) * static_cast<double>(x.size(0));
        sums[k] = sums[k].defined() ? sums[k] + s : s;
      }
    });
    for (auto& s : sums) s = (s / static_cast<double>(images.size())).to(at::kFloat);
    return sums;
  }

  std::int64_t images_, batch_size_;
};

const xdq::Option<std::int64_t> kImages =
    xdq::OptionSpec::integer("images", 512, "calibration images used to measure the means").range(1, 1 << 24);
const xdq::Option<std::int64_t> kBatchSize =
    xdq::OptionSpec::integer("batch_size", 256, "images per forward pass").range(1, 1 << 16);
xdq::OptionSchema schema() { return {kImages.spec(), kBatchSize.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new BiasCorrection(kImages(o), kBatchSize(o)); }

}  // namespace

XDQ_PLUGIN(xdq::GraphPass, "bias_correction", "1.0.0",
           "empirical bias correction: each layer's mean output shift after rounding, measured and removed", schema, create)
