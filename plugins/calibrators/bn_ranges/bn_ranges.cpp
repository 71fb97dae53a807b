// bn_ranges: data-free activation ranges from BatchNorm statistics (DFQ's data-free setting; OpenVINO's
// data-free mode uses n = 5). A layer's folded output is N(beta, gamma²) per channel; a value's range is
// [min_c(mean_c - n·std_c), max_c(mean_c + n·std_c)] of the activation's input, clipped to the activation's
// interval (ReLU, ReLU6); values after adds, pooling and concatenation use the propagated moments
// (xdq/ir/dfq.h). The model input takes the normalized range of [0, 1] pixels. No image is read.
#include "xdq/error.h"
#include "xdq/ir/dfq.h"
#include "xdq/plugin/interfaces.h"

namespace {

class BnRanges : public xdq::Calibrator {
 public:
  explicit BnRanges(double n) : n_(n) {}

  std::unique_ptr<xdq::RangeObserver> make_observer(const xdq::QuantSpec&) const override {
    throw xdq::Error("bn_ranges sets ranges from BN statistics; it observes no data");
  }
  Input input() const override { return Input::Graph; }

  xdq::Range range_from_graph(const xdq::Graph& graph, int value, const xdq::Range& input) const override {
    const int producer = graph.producer(value);
    if (producer < 0) return input;
    const xdq::Node& node = graph.nodes[producer];
    const auto bounds = xdq::clip_bounds(graph, node);
    std::string why;
    const auto moments = xdq::channel_moments(graph, bounds ? node.inputs[0] : value, &why);
    if (!moments) throw xdq::Error("bn_ranges: no range for '" + graph.value_names.at(value) + "': " + why);
    double lo = (moments->mean - n_ * moments->std).min().item<double>();
    double hi = (moments->mean + n_ * moments->std).max().item<double>();
    if (bounds) {
      lo = std::min(std::max(lo, bounds->first), bounds->second);
      hi = std::min(std::max(hi, bounds->first), bounds->second);
    }
    return {std::min(lo, 0.0), std::max(hi, 0.0)};
  }

 private:
  double n_;
};

const xdq::Option<double> kN =
    xdq::OptionSpec::number("n", 5.0, "standard deviations on each side of the mean (OpenVINO: 5)").range(0, 100, true);
xdq::OptionSchema schema() { return {kN.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new BnRanges(kN(o)); }

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "bn_ranges", "1.0.0", "data-free activation ranges from BatchNorm statistics", schema,
           create)
