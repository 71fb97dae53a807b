// Rounding reconstruction (AdaRound / BRECQ / QDrop engine) and empirical bias correction, against closed
// forms: h(V) at its initialization, the beta schedule, LSQ's step gradient, block units of every zoo
// model, the learned rounding lying on the grid and lowering each unit's output error, bias correction
// matching every layer's mean output to the FP model's.
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "test_util.h"
#include "xdq/data/fashion_mnist.h"
#include "xdq/config/node.h"
#include "xdq/error.h"
#include "xdq/ir/import.h"
#include "xdq/ir/passes.h"
#include "xdq/plugin/quantize.h"
#include "xdq/plugin/registry.h"
#include "xdq/quant/ptq.h"
#include "xdq/quant/reconstruction.h"
#include "../core/src/vector_math.h"

using namespace xdq;

namespace {

PluginRegistry& registry() { return test::built_plugins(); }

std::string zoo(const std::string& name) { return std::string(XDQ_SOURCE_DIR) + "/models/" + name + "/model.pt"; }

// `count` training images, MSE weight ranges (BRECQ's), rounding left to the optimizer.
struct Resnet20W4A4 : test::QuantizedResnet20 {
  explicit Resnet20W4A4(std::int64_t count) : QuantizedResnet20(count, Split::Train, 3, "mse") {}
};

QParams per_channel_qparams(const at::Tensor& w, int bits) {
  return weight_qparams(w, QuantSpec{bits, false, true, false, false, false}, "minmax");
}

}  // namespace

TEST(Reconstruction, RectifiedSigmoidStartsAtTheFractionalPart) {
  at::manual_seed(1);
  const at::Tensor w = at::randn({6, 3, 3, 3});
  const QParams q = per_channel_qparams(w, 4);
  const at::Tensor s = q.scale.view({-1, 1, 1, 1});
  const at::Tensor frac = w / s - at::floor(w / s);
  const at::Tensor h = rectified_sigmoid(initial_rounding_logits(w, q));
  EXPECT_LT((h - frac).abs().max().item<double>(), 2e-5);
  // With h = frac the soft weight is W itself wherever the grid does not clip it (the zero point is
  // rounded, so W/s + z may pass qmax or qmin by up to half a step).
  const at::Tensor grid = w / s + q.zero_point.view({-1, 1, 1, 1}).to(at::kFloat);
  const at::Tensor unclipped = (grid <= static_cast<double>(q.qmax)) & (grid >= static_cast<double>(q.qmin));
  EXPECT_GT(unclipped.sum().item<std::int64_t>(), w.numel() * 9 / 10);
  EXPECT_LT((soft_quantized_weight(w, q, frac) - w).masked_select(unclipped).abs().max().item<double>(), 1e-5);
  // h = 1 where frac >= 0.5 is round to nearest: torch's fake quantization (no exact ties in random data).
  const at::Tensor nearest = soft_quantized_weight(w, q, (frac >= 0.5).to(at::kFloat));
  const at::Tensor reference = at::fake_quantize_per_channel_affine(w, q.scale, q.zero_point, 0, q.qmin, q.qmax);
  EXPECT_LT((nearest - reference).abs().max().item<double>(), 1e-6);
  // h stays in [0, 1] for any V, and reaches both ends.
  const at::Tensor ends = rectified_sigmoid(at::tensor({-100.f, 100.f, 0.f}));
  EXPECT_FLOAT_EQ(ends[0].item<float>(), 0.f);
  EXPECT_FLOAT_EQ(ends[1].item<float>(), 1.f);
  EXPECT_NEAR(ends[2].item<float>(), 0.5f, 1e-6);
}

TEST(Reconstruction, BetaScheduleWarmsUpThenAnneals) {
  BetaSchedule linear;  // 20 -> 2, warm-up 0.2
  const std::int64_t T = 1000;
  EXPECT_DOUBLE_EQ(linear.beta(0, T), 20);
  EXPECT_DOUBLE_EQ(linear.beta(199, T), 20);
  EXPECT_FALSE(linear.regularizing(199, T));
  EXPECT_TRUE(linear.regularizing(200, T));
  EXPECT_DOUBLE_EQ(linear.beta(200, T), 20);
  EXPECT_DOUBLE_EQ(linear.beta(600, T), 11);  // halfway through the 800 annealing iterations
  EXPECT_DOUBLE_EQ(linear.beta(1000, T), 2);
  BetaSchedule cosine;
  cosine.cosine = true;
  EXPECT_DOUBLE_EQ(cosine.beta(600, T), 11);
  EXPECT_NEAR(cosine.beta(400, T), 2 + 9 * (1 + std::cos(M_PI / 4)), 1e-12);
  EXPECT_NEAR(cosine.beta(1000, T), 2, 1e-12);
}

TEST(Reconstruction, LsqStepGradientIsTheClosedForm) {
  // Unsigned 4-bit grid, zero point 3: values inside, below and above the range.
  QParams q;
  q.qmin = 0;
  q.qmax = 15;
  q.zero_point = at::tensor(3, at::kInt);
  const double s0 = 0.25, factor = 0.1;
  q.scale = at::tensor(s0);
  const at::Tensor x = at::tensor({-2.0f, -0.3f, 0.07f, 0.61f, 1.37f, 2.9f, 5.0f});
  const at::Tensor scale = at::tensor(static_cast<float>(s0)).requires_grad_(true);
  const at::Tensor y = lsq_fake_quantize(x, scale, q, factor);
  EXPECT_TRUE(y.detach().allclose(at::fake_quantize_per_tensor_affine(x, s0, 3, 0, 15)));
  y.sum().backward();
  double expected = 0;
  for (float v : {-2.0f, -0.3f, 0.07f, 0.61f, 1.37f, 2.9f, 5.0f}) {
    const double r = std::nearbyint(v / s0);
    if (r + 3 < 0) expected += 0 - 3;
    else if (r + 3 > 15) expected += 15 - 3;
    else expected += r - v / s0;
  }
  EXPECT_NEAR(scale.grad().item<double>(), factor * expected, 1e-5);
}

// The one-pass soft rounding against AdaRound's formulas composed of ATen ops: the weight within a float32
// rounding of a grid step, the regularizer and the logits' gradient (through the weight and the
// regularizer) within 1e-5 relative; per-channel (an asymmetric grid) and per-tensor; logits spread so
// that some h sit at 0 or 1 (their gradient is 0).
TEST(Reconstruction, FusedSoftRoundingMatchesTheComposedOps) {
  at::manual_seed(4);
  const at::Tensor w = at::randn({6, 4, 3, 3});
  QParams per_tensor;
  per_tensor.scale = at::tensor(0.3);
  per_tensor.zero_point = at::tensor(1, at::kInt);
  per_tensor.qmin = -8;
  per_tensor.qmax = 7;
  for (const QParams& q : {per_channel_qparams(w, 4), per_tensor}) {
    const at::Tensor v0 = initial_rounding_logits(w, q) + 3 * at::randn(w.sizes());
    const at::Tensor upstream = at::randn(w.sizes());
    auto run = [&](bool fused) {
      const at::Tensor v = v0.clone().requires_grad_(true);
      SoftRounding r;
      if (fused) {
        r = soft_rounding(v, w, q, 5.0);
      } else {
        const at::Tensor h = rectified_sigmoid(v);
        r = {soft_quantized_weight(w, q, h), (1 - (2 * h - 1).abs().pow(5.0)).sum()};
      }
      ((r.weight * upstream).sum() + 0.3 * r.regularizer).backward();
      return std::tuple{r.weight.detach(), r.regularizer.item<double>(), v.grad()};
    };
    const auto [weight, reg, grad] = run(true);
    const auto [weight_ref, reg_ref, grad_ref] = run(false);
    const double step = q.scale.max().item<double>();
    EXPECT_LE((weight - weight_ref).abs().max().item<double>(), 1e-6 * step * 8) << q.per_channel();
    EXPECT_NEAR(reg, reg_ref, 1e-5 * reg_ref) << q.per_channel();
    EXPECT_LE((grad - grad_ref).abs().max().item<double>(), 1e-5 * grad_ref.abs().max().item<double>()) << q.per_channel();
    EXPECT_GT((grad == 0).sum().item<std::int64_t>(), 0) << "no h at 0 or 1: the clamp's gradient is untested";
  }
}

// The soft rounding's exp, log and pow (vector_math.h) against long double's on dense grids: relative
// errors below the 1e-13 they promise (their series truncate below 1e-14; the reductions and Horner sums
// add a few double roundings, amplified up to 19 |ln x| times in x^19); the clamped and special values.
TEST(VectorMath, ExpLogAndPowWithinTheirBoundOfLongDouble) {
  using namespace vector_math;
  auto relative = [](double got, long double want) { return static_cast<double>(std::fabs((got - want) / want)); };
  double exp_error = 0, log_error = 0, pow_error = 0;
  for (int i = 0; i <= 200000; ++i) {
    const double x = -708.0 + 1417.0 * i / 200000.0;
    exp_error = std::max(exp_error, relative(exp_double(x), std::exp(static_cast<long double>(x))));
  }
  for (int e = -149; e <= 0; ++e)
    for (int i = 0; i < 1000; ++i) {
      const double x = std::ldexp(1.0 + i / 1000.0, e);  // every binade of a float32 in (0, 2)
      if (x != 1.0) log_error = std::max(log_error, relative(log_double(x), std::log(static_cast<long double>(x))));
    }
  for (double y : {1.0, 4.5, 19.0}) {
    const PowerOfUnitInterval power(y);
    for (int i = 1; i <= 100000; ++i) {
      const double x = i / 100000.0;
      const long double want = std::pow(static_cast<long double>(x), static_cast<long double>(y));
      if (want > 1e-300L) pow_error = std::max(pow_error, relative(power(x), want));
    }
  }
  EXPECT_LT(exp_error, 1e-13);
  EXPECT_LT(log_error, 1e-13);
  EXPECT_LT(pow_error, 1e-13);
  EXPECT_EQ(static_cast<float>(exp_double(-1000.0)), 0.0f);
  EXPECT_EQ(static_cast<float>(exp_double(1000.0)), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(exp_double(std::nan(""))));
  EXPECT_EQ(log_double(1.0), 0.0);
  EXPECT_EQ(static_cast<float>(PowerOfUnitInterval(19.0)(1e-30)), 0.0f);  // 1e-570 underflows
  EXPECT_EQ(PowerOfUnitInterval(19.0)(0.0), 0.0);
  EXPECT_EQ(PowerOfUnitInterval(0.0)(0.0), 1.0);
  EXPECT_EQ(PowerOfUnitInterval(-1.0)(0.0), std::numeric_limits<double>::infinity());
  EXPECT_EQ(PowerOfUnitInterval(19.0)(1.0), 1.0);
}

// LSQ with QDrop written here with ATen ops (the reference): the step's gradient scaled by `factor`
// through s = (scale - f·scale) + f·scale, round with a straight-through gradient, dropped elements kept.
at::Tensor composed_lsq(const at::Tensor& x, const at::Tensor& scale, const QParams& q, double factor, double drop,
                        std::uint64_t key) {
  const double z = q.zero_point.item<double>();
  const at::Tensor s = (scale - scale * factor).detach() + scale * factor;
  const at::Tensor y = x / s;
  const at::Tensor rounded = (at::round(y) - y).detach() + y;
  const at::Tensor xq = ((rounded + z).clamp(static_cast<double>(q.qmin), static_cast<double>(q.qmax)) - z) * s;
  return drop > 0 ? at::where(uniform_draws(x, key) < drop, x, xq) : xq;
}

// The one-pass CPU quantizer against the composed reference: outputs and input gradients equal up to a
// float32 rounding (the reference multiplies and divides by the step), zero at the same elements, the step
// gradient up to the reference's float32 sum's rounding; in channels-last memory the same; an
// asymmetric and a signed grid, with and without dropping.
TEST(Reconstruction, FusedLsqQuantizerMatchesTheComposedOps) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({4, 8, 6, 6}) * 0.6;
  const at::Tensor upstream = at::randn({4, 8, 6, 6});
  for (const auto& [qmin, qmax, zero] : {std::tuple{0, 15, 3}, std::tuple{-8, 7, 0}})
    for (double drop : {0.0, 0.5})
      for (bool channels_last : {false, true}) {
        QParams q;
        q.qmin = qmin;
        q.qmax = qmax;
        q.zero_point = at::tensor(zero, at::kInt);
        q.scale = at::tensor(0.1);
        const std::string what = "grid [" + std::to_string(qmin) + ", " + std::to_string(qmax) + "] drop " +
                                 std::to_string(drop) + (channels_last ? " NHWC" : " NCHW");
        auto run = [&](bool fused) {
          const at::Tensor xi = (channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x.clone()).requires_grad_(true);
          const at::Tensor scale = at::tensor(0.1f).requires_grad_(true);
          const at::Tensor y = fused ? lsq_fake_quantize(xi, scale, q, 0.25, drop, 77) : composed_lsq(xi, scale, q, 0.25, drop, 77);
          (y * upstream).sum().backward();
          return std::tuple{y.detach().contiguous(), xi.grad().contiguous(), scale.grad().item<double>()};
        };
        const auto [y, gx, gs] = run(true);
        const auto [y_ref, gx_ref, gs_ref] = run(false);
        EXPECT_LE((y - y_ref).abs().max().item<double>(), 1e-6) << what;  // s differs from scale by at most an ulp
        // The composed chain multiplies by s and divides by it: equal to a float32 rounding or two.
        EXPECT_LE((gx - gx_ref).abs().max().item<double>(), 1e-6 * upstream.abs().max().item<double>()) << what;
        EXPECT_TRUE(at::equal(gx == 0, gx_ref == 0)) << what;  // the same elements outside the grid
        // Float32 sums of n terms (the reference's) err by up to about log2(n) * eps * Σ|term|; a term is
        // factor * upstream * (code - y, or a grid end), at most 8 in magnitude here.
        EXPECT_NEAR(gs, gs_ref, 1e-6 * 0.25 * 8 * upstream.abs().sum().item<double>()) << what;
        if (drop > 0) EXPECT_GT((y == x).to(at::kFloat).mean().item<double>(), 0.3) << what;  // some kept as FP
      }
}

// The draws: in [0, 1), mean 1/2 and the fraction below 0.3 within 5 standard deviations over 10^5
// elements, the same numbers by logical index in channels-last memory, others for another key.
// Shapes: 10 channels (each pixel's channels one by one), 48 (whole blocks of 16, a chunk of 16 384
// elements starting inside a pixel).
TEST(Reconstruction, UniformDrawsAreUniformAndIndependentOfTheLayout) {
  for (const auto& shape : {std::vector<std::int64_t>{10, 10, 25, 40}, std::vector<std::int64_t>{3, 48, 13, 17}}) {
    const at::Tensor like = at::empty(shape);
    const at::Tensor u = uniform_draws(like, 12345);
    const double n = static_cast<double>(u.numel());
    EXPECT_GE(u.min().item<double>(), 0.0);
    EXPECT_LT(u.max().item<double>(), 1.0);
    EXPECT_NEAR(u.mean().item<double>(), 0.5, 5 * std::sqrt(1.0 / 12 / n));
    EXPECT_NEAR((u < 0.3).to(at::kDouble).mean().item<double>(), 0.3, 5 * std::sqrt(0.3 * 0.7 / n));
    EXPECT_TRUE(at::equal(uniform_draws(like.contiguous(at::MemoryFormat::ChannelsLast), 12345).contiguous(), u))
        << shape[1] << " channels";
    EXPECT_FALSE(at::equal(uniform_draws(like, 12346), u));
  }
}

// QDrop's one-pass mixing against at::where on the draws: the same elements, in either layout.
TEST(Reconstruction, QdropMixTakesTheFpValueWhereTheDrawIsBelowTheProbability) {
  at::manual_seed(5);
  const at::Tensor quantized = at::randn({3, 48, 13, 17}), fp = at::randn({3, 48, 13, 17});
  const at::Tensor expected = at::where(uniform_draws(quantized, 99) < 0.3, fp, quantized);
  EXPECT_TRUE(at::equal(qdrop_mix(quantized, fp, 0.3, 99), expected));
  const at::MemoryFormat cl = at::MemoryFormat::ChannelsLast;
  const at::Tensor mixed = qdrop_mix(quantized.contiguous(cl), fp.contiguous(cl), 0.3, 99);
  EXPECT_TRUE(mixed.is_contiguous(cl));
  EXPECT_TRUE(at::equal(mixed.contiguous(), expected));
  const double kept = (expected == fp).to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(kept, 0.3, 5 * std::sqrt(0.3 * 0.7 / static_cast<double>(fp.numel())));
}

// The mixing read through rows of the two caches (the unit input of one QDrop batch) gives the bits of the
// mixing of the gathered images, in the caches' layout; images of 392 values, so that the fixed chunks of
// 16 384 end inside an image. float16 caches are gathered and converted; a row outside the caches is refused.
TEST(Reconstruction, QdropMixOfCachedRowsEqualsTheMixOfGatheredRows) {
  at::manual_seed(8);
  const at::Tensor rows = at::tensor(std::vector<std::int64_t>{5, 0, 69, 5, 33, 12, 68, 1}).repeat({8});
  for (bool channels_last : {false, true}) {
    const at::MemoryFormat format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    const at::Tensor quantized = at::randn({70, 8, 7, 7}).contiguous(format), fp = at::randn({70, 8, 7, 7}).contiguous(format);
    const at::Tensor mixed = qdrop_mix_of_rows(quantized, fp, rows, 0.4, 77);
    const at::Tensor expected = qdrop_mix(gather_rows(quantized, rows), gather_rows(fp, rows), 0.4, 77);
    EXPECT_TRUE(mixed.is_contiguous(format)) << channels_last;
    EXPECT_TRUE(at::equal(mixed, expected)) << channels_last;
    EXPECT_TRUE(at::equal(mixed, at::where(uniform_draws(expected, 77) < 0.4, fp.index_select(0, rows),
                                           quantized.index_select(0, rows))))
        << channels_last;
  }
  const at::Tensor quantized = at::randn({10, 4, 3, 3}), fp = at::randn({10, 4, 3, 3});
  const at::Tensor some = at::tensor(std::vector<std::int64_t>{9, 0, 4});
  EXPECT_TRUE(at::equal(qdrop_mix_of_rows(quantized.to(at::kHalf), fp.to(at::kHalf), some, 0.5, 3),
                        qdrop_mix(gather_rows(quantized.to(at::kHalf), some).to(at::kFloat),
                                  gather_rows(fp.to(at::kHalf), some).to(at::kFloat), 0.5, 3)));
  EXPECT_THROW(qdrop_mix_of_rows(quantized, fp, at::tensor(std::vector<std::int64_t>{9, 10, 4}), 0.5, 3), Error);
  EXPECT_THROW(qdrop_mix_of_rows(quantized, fp, at::tensor(std::vector<std::int64_t>{-1}), 0.5, 3), Error);
}

// The one-pass loss against Σ w²|out - target|^p / (images · positions) written with ATen ops, with and
// without weights, p = 2 and BRECQ's 2.4, in either layout. The reference sums n float32 terms (error up to
// about log2(n)·eps·Σ|term|); the gradient is a product of the same factors in another order, and at
// p = 2.4 two pow implementations (a few ulp): 1e-5 relative.
TEST(Reconstruction, FusedLossMatchesTheComposedOps) {
  at::manual_seed(6);
  const at::Tensor out0 = at::randn({4, 8, 6, 6}), target = at::randn({4, 8, 6, 6}), weight = at::rand({4, 8, 6, 6}) + 1;
  const double divisor = 4 * 6 * 6;
  for (double p : {2.0, 2.4})
    for (bool weighted : {false, true})
      for (bool channels_last : {false, true}) {
        const std::string what = "p " + std::to_string(p) + (weighted ? " weighted" : "") + (channels_last ? " NHWC" : " NCHW");
        const at::MemoryFormat format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
        const at::Tensor out = out0.clone(format).requires_grad_(true);
        const at::Tensor loss = reconstruction_loss(out, target, weighted ? weight.contiguous(format) : at::Tensor(), p);
        loss.backward();
        const at::Tensor ref_out = out0.clone().requires_grad_(true);
        at::Tensor err = (ref_out - target).abs().pow(p);
        if (weighted) err = err * weight.pow(2);
        const at::Tensor ref = err.sum() / divisor;
        ref.backward();
        const double sum_bound = 1e-6 * 10 * err.abs().sum().item<double>() / divisor;
        EXPECT_NEAR(loss.item<double>(), ref.item<double>(), sum_bound) << what;
        EXPECT_LE((out.grad() - ref_out.grad()).abs().max().item<double>(), 1e-5 * ref_out.grad().abs().max().item<double>())
            << what;
      }
}

// The loss read through rows of the caches (the images of one optimization batch, in place) gives the
// bits of the loss of the gathered images, value and gradient, for the upstream gradient 1 (formed in the
// forward pass) and another (recomputed); images of 392 values, so that the loss's fixed chunks of 16 384
// end inside an image. A float16 cache is gathered and converted; a row outside the cache is refused.
TEST(Reconstruction, LossOfCachedRowsEqualsTheLossOfGatheredRows) {
  at::manual_seed(7);
  const at::Tensor rows = at::tensor(std::vector<std::int64_t>{5, 0, 69, 5, 33, 12, 68, 1}).repeat({8});
  for (bool channels_last : {false, true})
    for (bool weighted : {false, true})
      for (double upstream : {1.0, 0.5}) {
        const std::string what = std::string(channels_last ? "NHWC" : "NCHW") + (weighted ? " weighted" : "") +
                                 " upstream " + std::to_string(upstream);
        const at::MemoryFormat format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
        const at::Tensor target = at::randn({70, 8, 7, 7}).contiguous(format),
                         weight = weighted ? (at::rand({70, 8, 7, 7}) + 1).contiguous(format) : at::Tensor(),
                         out0 = at::randn({64, 8, 7, 7}).contiguous(format);
        const at::Tensor out = out0.clone().requires_grad_(true), gathered_out = out0.clone().requires_grad_(true);
        const at::Tensor loss = reconstruction_loss_of_rows(out, target, weight, rows, 2.4);
        const at::Tensor gathered = reconstruction_loss(gathered_out, gather_rows(target, rows),
                                                        weighted ? gather_rows(weight, rows) : weight, 2.4);
        (loss * upstream).backward();
        (gathered * upstream).backward();
        EXPECT_EQ(loss.item<double>(), gathered.item<double>()) << what;
        EXPECT_TRUE(at::equal(out.grad(), gathered_out.grad())) << what;
        // And against the composed ops on index_select's images (tolerances as in the test above).
        const at::Tensor ref_out = out0.clone().requires_grad_(true);
        at::Tensor err = (ref_out - target.index_select(0, rows)).abs().pow(2.4);
        if (weighted) err = err * weight.index_select(0, rows).pow(2);
        const at::Tensor ref = err.sum() / (64 * 49);
        (ref * upstream).backward();
        EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-5 * ref.item<double>()) << what;
        EXPECT_LE((out.grad() - ref_out.grad()).abs().max().item<double>(), 1e-5 * ref_out.grad().abs().max().item<double>())
            << what;
      }
  const at::Tensor target = at::randn({10, 4, 3, 3}), out = at::randn({3, 4, 3, 3}), some = at::tensor(std::vector<std::int64_t>{9, 0, 4});
  EXPECT_EQ(reconstruction_loss_of_rows(out, target.to(at::kHalf), at::Tensor(), some).item<double>(),
            reconstruction_loss(out, gather_rows(target.to(at::kHalf), some).to(at::kFloat), at::Tensor()).item<double>());
  EXPECT_THROW(reconstruction_loss_of_rows(out, target, at::Tensor(), at::tensor(std::vector<std::int64_t>{9, 10, 4})), Error);
}

// The rows of a cache against index_select's: the same values, in the cache's layout (the loss reads
// target rows in place only when they are laid out as the unit's output), for NCHW and channels-last
// images, float16 ones, flat rows and a strided cache; a row outside the cache is refused.
TEST(Reconstruction, GatheredRowsAreIndexSelectsInTheCachesLayout) {
  at::manual_seed(3);
  const at::Tensor rows = at::tensor(std::vector<std::int64_t>{4, 0, 19, 4, 7});
  const at::Tensor images = at::randn({20, 16, 5, 6});
  for (const at::Tensor& cache : {images, images.contiguous(at::MemoryFormat::ChannelsLast), images.to(at::kHalf),
                                  images.flatten(1), images.slice(1, 0, 8)}) {
    const at::Tensor got = gather_rows(cache, rows);
    EXPECT_TRUE(at::equal(got, cache.index_select(0, rows))) << cache.strides();
    EXPECT_EQ(got.scalar_type(), cache.scalar_type());
    if (cache.is_non_overlapping_and_dense()) EXPECT_EQ(got.strides(), cache.strides());
  }
  EXPECT_ANY_THROW(gather_rows(images, at::tensor(std::vector<std::int64_t>{3, 20})));
  EXPECT_ANY_THROW(gather_rows(images.contiguous(at::MemoryFormat::ChannelsLast), at::tensor(std::vector<std::int64_t>{20})));
}

TEST(Reconstruction, BlockUnitsCoverEveryResidualBlockOfTheZoo) {
  struct Case {
    std::string model;
    std::size_t blocks;                 // units at block granularity
    std::vector<std::string> must_have;  // block units expected by name
  };
  const std::vector<Case> cases = {
      {"resnet20_fmnist", 11, {"conv1", "layer1.block0", "layer2.block0", "layer3.block2", "fc"}},
      {"mobilenet_v2_fmnist", 10, {"stem", "features0", "features1", "features3", "features6", "last", "fc"}},
      {"shufflenet_v2_fmnist", 7, {"stem", "stage2_0", "stage2_1", "stage3_0", "stage3_1", "last", "fc"}},
      {"vgg_fmnist", 0, {}},
  };
  for (const auto& c : cases) {
    Graph g = import_torchscript(zoo(c.model)).graph;
    fold_batch_norm(g);
    const auto layers = g.layer_nodes();
    for (Granularity gran : {Granularity::Layer, Granularity::Block, Granularity::TwoBlocks}) {
      const auto units = reconstruction_units(g, gran);
      std::multiset<int> covered;
      for (std::size_t i = 0; i < units.size(); ++i) {
        covered.insert(units[i].layers.begin(), units[i].layers.end());
        if (i > 0) EXPECT_LE(units[i - 1].last, units[i].first) << c.model << ": units overlap";
        const int producer = g.producer(units[i].output_value);
        EXPECT_TRUE(producer >= units[i].first && producer < units[i].last) << c.model << " " << units[i].name;
      }
      EXPECT_EQ(covered, std::multiset<int>(layers.begin(), layers.end())) << c.model << ": every layer in one unit";
      if (gran == Granularity::Layer) EXPECT_EQ(units.size(), layers.size()) << c.model;
      if (gran == Granularity::Block && c.blocks > 0) {
        EXPECT_EQ(units.size(), c.blocks) << c.model;
        for (const auto& name : c.must_have)
          EXPECT_TRUE(std::any_of(units.begin(), units.end(), [&](const auto& u) { return u.name == name; }))
              << c.model << " has no unit " << name;
      }
    }
    // Every residual or concat block is one unit, its shortcut conv included.
    const auto units = reconstruction_units(g, Granularity::Block);
    for (const ResidualBlock& b : find_residual_blocks(g, true)) {
      auto it = std::find_if(units.begin(), units.end(), [&](const auto& u) { return u.name == b.name; });
      ASSERT_NE(it, units.end()) << c.model << " block " << b.name;
      EXPECT_EQ(it->layers, b.layers) << c.model << " block " << b.name;
    }
    EXPECT_EQ(reconstruction_units(g, Granularity::TwoBlocks).size(), (units.size() + 1) / 2) << c.model;
  }
}

TEST(Reconstruction, LearnedRoundingStaysOnTheGridAndLowersEveryBlocksError) {
  Resnet20W4A4 r(128);
  ReconstructionOptions o;
  o.method = "test";
  o.iters = 100;
  RoundingContext ctx;
  ctx.graph = &r.quantized->graph();
  ctx.layers = &r.quantized->layers();
  ctx.calibration = r.images;
  ctx.seed = 5;
  std::map<std::string, std::string> files;
  ctx.files = &files;
  ctx.run_name = "unit";
  const auto reports = reconstruct(ctx, o);
  ASSERT_EQ(reports.size(), 11u);
  for (const auto& rep : reports)
    if (rep.name.rfind("layer", 0) == 0) EXPECT_LT(rep.loss_final, rep.loss_nearest) << rep.name;
  for (const auto& layer : r.quantized->layers()) {
    // Each weight is floor(W/s) or floor(W/s) + 1 on its channel's grid (clamped).
    const at::Tensor& w = ctx.graph->nodes[layer.node].weight;
    std::vector<std::int64_t> shape(w.dim(), 1);
    shape[0] = -1;
    const at::Tensor s = layer.qparams.scale.view(shape), z = layer.qparams.zero_point.view(shape).to(at::kFloat);
    const at::Tensor grid = layer.quantized_weight / s + z;
    EXPECT_LT((grid - grid.round()).abs().max().item<double>(), 1e-3);
    const at::Tensor lo = (at::floor(w / s) + z).clamp(layer.qparams.qmin, layer.qparams.qmax);
    const at::Tensor hi = (at::floor(w / s) + z + 1).clamp(layer.qparams.qmin, layer.qparams.qmax);
    EXPECT_TRUE(((grid.round() == lo) | (grid.round() == hi)).all().item<bool>());
  }
  EXPECT_EQ(files.count("unit_curves.csv"), 1u);
  EXPECT_NE(files["unit_curves.csv"].find("layer3.block2,99,"), std::string::npos);

}

TEST(Reconstruction, ChunkedModelReconstructsLayerByLayer) {
  const ImportedModel m = import_torchscript(zoo("shufflenet_v2_fmnist"));
  Graph folded = m.graph;
  fold_batch_norm(folded);
  PtqSettings s;
  s.w_bits = s.a_bits = 4;
  QuantizedModel q(folded, s);
  q.set_weight_ranges("minmax");
  RoundingContext ctx;
  ctx.graph = &q.graph();
  ctx.layers = &q.layers();
  ctx.calibration = m.preprocess.apply(load_fashion_mnist(fashion_mnist_dir(), Split::Train).subset(32, 4).images);
  ReconstructionOptions o;
  o.granularity = Granularity::Layer;
  o.iters = 3;
  o.fisher = true;
  EXPECT_EQ(reconstruct(ctx, o).size(), 19u);
  o.granularity = Granularity::Block;  // stride-1 units fork at the chunk's list
  EXPECT_EQ(reconstruct(ctx, o).size(), 7u);
}

TEST(Reconstruction, SameSeedSameRounding) {
  ReconstructionOptions o;
  o.iters = 10;
  std::vector<std::vector<at::Tensor>> weights;
  for (int run = 0; run < 2; ++run) {
    Resnet20W4A4 r(64);
    RoundingContext ctx;
    ctx.graph = &r.quantized->graph();
    ctx.layers = &r.quantized->layers();
    ctx.calibration = r.images;
    ctx.seed = 9;
    reconstruct(ctx, o);
    weights.emplace_back();
    for (const auto& layer : r.quantized->layers()) weights.back().push_back(layer.quantized_weight);
  }
  for (std::size_t i = 0; i < weights[0].size(); ++i) EXPECT_TRUE(weights[0][i].equal(weights[1][i]));
}

TEST(Reconstruction, QDropLearnsActivationStepsAndFisherLossRuns) {
  Resnet20W4A4 r(128);
  const auto before = r.quantized->activations();
  RoundingContext ctx;
  ctx.graph = &r.quantized->graph();
  ctx.layers = &r.quantized->layers();
  ctx.activations = &r.quantized->activations();
  ctx.calibration = r.images;
  auto qdrop = registry().create<WeightOptimizer>(
      "qdrop", validate_options(ConfigNode::parse("{iters: 20, loss: fisher}", "t.yaml"),
                                registry().get(PluginKind::WeightOptimizer, "qdrop").options));
  qdrop->optimize(ctx);
  int changed = 0;
  for (std::size_t i = 0; i < before.size(); ++i) {
    const double a = before[i].qparams.scale.item<double>(), b = r.quantized->activations()[i].qparams.scale.item<double>();
    EXPECT_TRUE(std::isfinite(b) && b > 0);
    changed += a != b;
  }
  EXPECT_GT(changed, 0);  // steps produced inside blocks were learned
  for (const auto& layer : r.quantized->layers()) EXPECT_TRUE(at::isfinite(layer.quantized_weight).all().item<bool>());
}

TEST(Reconstruction, NonFiniteLossNamesTheUnit) {
  Resnet20W4A4 r(64);
  RoundingContext ctx;
  ctx.graph = &r.quantized->graph();
  ctx.layers = &r.quantized->layers();
  at::Tensor images = r.images.clone();
  images[0][0][5][5] = std::numeric_limits<float>::quiet_NaN();
  ctx.calibration = images;
  ReconstructionOptions o;
  o.method = "brecq";
  o.iters = 5;
  o.batch_size = 64;
  try {
    reconstruct(ctx, o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("brecq: loss became NaN at iteration 0 of unit 'conv1'"), std::string::npos)
        << e.what();
  }
}

TEST(Reconstruction, OptionsThatNeedActivationQuantizationAreRefused) {
  const auto& schema = registry().get(PluginKind::WeightOptimizer, "brecq").options;
  for (const char* bad : {"{act_steps: joint}", "{drop_prob: 0.5}"}) {
    const Options o = validate_options(ConfigNode::parse(bad, "t.yaml"), schema);
    EXPECT_THROW(reconstruction_options(o, "brecq"), Error) << bad;
  }
  EXPECT_THROW(validate_options(ConfigNode::parse("{granularity: network}", "t.yaml"), schema), Error);
  // In an experiment: refused at load time, with the place.
  test::TempDir dir;
  test::write_text(dir.file("e.yaml"), "experiment: e\nmodels:\n  - {name: r, path: " + zoo("resnet20_fmnist") +
                                            "}\ncalibration: {source: fashion_mnist.train, count: 16}\n"
                                            "test: {domains: [fashion_mnist.test], count: 16}\n"
                                            "quantization:\n  bits: [w4a4]\n  calibrators: [minmax]\n"
                                            "  rounding: [nearest, {name: qdrop, act_quant: false}]\n");
  const auto r = test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("e.yaml") + " --out " + dir.file("o"));
  EXPECT_EQ(r.exit_code, 2);  // a config error
  EXPECT_NE(r.output.find("e.yaml:9 quantization.rounding[1]: plugin 'qdrop'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("act_steps 'joint' needs act_quant: true"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("o")));
}

TEST(BiasCorrection, EveryLayersMeanOutputMatchesTheFpModel) {
  Resnet20W4A4 r(256);
  r.quantized->round_to_nearest();
  // Mean output per channel of every layer, from a whole-model forward with observing hooks.
  auto layer_means = [&](Executor exec) {
    std::vector<at::Tensor> means;
    for (const auto& layer : r.quantized->layers()) {
      const int v = r.quantized->graph().nodes[layer.node].outputs[0];
      exec.set_value_hook(v, [&means](const at::Tensor& y) {
        means.push_back(y.dim() == 4 ? y.mean({0, 2, 3}) : y.mean(0));
        return y;
      });
    }
    at::NoGradGuard no_grad;
    exec.forward(r.images);
    return means;
  };
  const auto fp = layer_means(Executor(r.quantized->graph()));
  auto gap = [&](const std::vector<at::Tensor>& q) {
    double worst = 0;
    for (std::size_t i = 0; i < fp.size(); ++i) worst = std::max(worst, (q[i] - fp[i]).abs().max().item<double>());
    return worst;
  };
  const double before = gap(layer_means(r.quantized->executor()));
  auto pass = registry().create<GraphPass>("bias_correction", Options({{"images", std::int64_t{256}}, {"batch_size", std::int64_t{128}}}));
  EXPECT_EQ(pass->stage(), PassStage::AfterRounding);
  PassContext ctx;
  ctx.calibration = r.images;
  apply_pass(*r.quantized, Loaded<GraphPass>(registry().get(PluginKind::GraphPass, "bias_correction"), pass), ctx);
  const double after = gap(layer_means(r.quantized->executor()));
  EXPECT_GT(before, 0.05);
  EXPECT_LT(after, 2e-4);
  EXPECT_THROW(pass->run(r.model.graph, ctx), std::exception);  // no quantized model: refused
}

// init_images: each activation range is the best of the 80 shrunk candidates for mean |x - Q(x)|^p, x
// from the first `count` images only, through the model quantized so far (here: the stem's output, with
// the model input quantized on its new range and the stem's rounded weights, computed with at::conv2d).
TEST(Reconstruction, InitImagesRangesAreTheLpSearchOnTheFirstImages) {
  Resnet20W4A4 r(64);
  r.quantized->round_to_nearest();
  RoundingContext ctx = r.quantized->rounding_context({});
  const at::Tensor images = r.images.clone();
  images.slice(0, 16) *= 50;  // images past the first 16 would widen every range
  ctx.calibration = images;
  initialize_activation_ranges(ctx, 16, 2.4);
  const auto best_range = [](const at::Tensor& x, const QuantSpec& spec) {
    const double lo = x.min().item<double>(), hi = x.max().item<double>();
    Range best{lo, hi};
    double best_score = std::numeric_limits<double>::infinity();
    for (int k = 0; k < 80; ++k) {
      const Range c{lo * (1 - 0.01 * k), hi * (1 - 0.01 * k)};
      const double score = (fake_quantize(x, qparams_from_range(spec, c)) - x).to(at::kDouble).abs().pow(2.4).mean().item<double>();
      if (score < best_score) best_score = score, best = c;
    }
    return best;
  };
  const auto& acts = r.quantized->activations();
  const at::Tensor input = r.images.slice(0, 0, 16);
  const Range first = best_range(input, acts[0].spec);
  EXPECT_DOUBLE_EQ(acts[0].range.min, first.min);
  EXPECT_DOUBLE_EQ(acts[0].range.max, first.max);
  EXPECT_LT(acts[0].range.max, 0.2 * images.max().item<double>());  // the later images were not read
  const QuantizedLayer& stem = r.quantized->layers()[0];
  const Node& conv = r.quantized->graph().nodes[stem.node];
  const at::Tensor stem_out = at::relu(at::conv2d(fake_quantize(input, acts[0].qparams), stem.quantized_weight, conv.bias,
                                                  conv.conv.stride, conv.conv.padding, conv.conv.dilation, conv.conv.groups));
  ASSERT_EQ(acts[1].name, "layer1.block0.conv1:input");
  const Range second = best_range(stem_out, acts[1].spec);
  EXPECT_NEAR(acts[1].range.max, second.max, 1e-5 * second.max);  // one float32 conv against another
  EXPECT_NEAR(acts[1].range.min, second.min, 1e-6);
}

// Every reconstruction unit reports its loop time per iteration and its caching time.
TEST(Reconstruction, EveryUnitReportsItsTimings) {
  Resnet20W4A4 r(64);
  RoundingContext ctx = r.quantized->rounding_context({});
  ctx.calibration = r.images;
  std::vector<UnitTiming> timings;
  ctx.timings = &timings;
  ReconstructionOptions o;
  o.iters = 4;
  o.act_steps = "after";
  o.act_iters = 3;
  const auto reports = reconstruct(ctx, o);
  ASSERT_EQ(timings.size(), reports.size());
  ASSERT_EQ(timings.size(), reconstruction_units(r.quantized->graph(), Granularity::Block).size());
  int with_steps = 0;  // units holding an activation quantizer (not the classifier, whose output is the logits)
  for (std::size_t k = 0; k < timings.size(); ++k) {
    const UnitTiming& t = timings[k];
    EXPECT_EQ(t.name, reports[k].name);
    EXPECT_EQ(t.iterations, 4);
    EXPECT_GT(t.seconds_per_iteration, 0);
    EXPECT_GT(t.caching_seconds, 0);
    if (t.step_iterations > 0) {
      ++with_steps;
      EXPECT_EQ(t.step_iterations, 3);
      EXPECT_GT(t.step_seconds_per_iteration, 0);
      EXPECT_GT(t.step_caching_seconds, 0);
    }
    EXPECT_GE(t.seconds, 4 * t.seconds_per_iteration + t.caching_seconds + 3 * t.step_seconds_per_iteration);
  }
  EXPECT_EQ(with_steps, static_cast<int>(timings.size()) - 1);
}

// Unit caches above cache_limit_mb are kept in float16 and read back as float32. Each cached value is
// then off by at most 2^-11 relative, so the error out - target of a W4A4 unit, some 5 % of the target,
// moves by at most 2 * 2^-11 / 0.05 = 2 % of itself, its square (the loss) by 4 %. A value beyond
// float16's range makes the unit cached in float32 again: then the losses are the float32 run's exactly.
TEST(Reconstruction, LargeCachesAreKeptInFloat16WithinItsRounding) {
  auto unit_losses = [](const std::string& precision, double image_scale, std::string& log) {
    Resnet20W4A4 r(128);
    ReconstructionOptions o;
    o.method = "test";
    o.iters = 1;
    o.cache_precision = precision;
    o.cache_limit_mb = 1;  // ResNet-20's units at 128 images: 10-20 MB in float32
    RoundingContext ctx;
    ctx.graph = &r.quantized->graph();
    ctx.layers = &r.quantized->layers();
    ctx.calibration = r.images * image_scale;
    std::ostringstream progress;
    ctx.progress = &progress;
    std::vector<double> losses;
    for (const auto& rep : reconstruct(ctx, o)) losses.push_back(rep.loss_nearest);
    log = progress.str();
    return losses;
  };
  std::string log32, log16, log_big32, log_big;
  const auto f32 = unit_losses("float32", 1, log32), f16 = unit_losses("auto", 1, log16);
  EXPECT_EQ(log32.find("float16"), std::string::npos);
  EXPECT_NE(log16.find("test: unit 'layer1.block0' cached in float16"), std::string::npos) << log16;
  ASSERT_EQ(f32.size(), f16.size());
  for (std::size_t k = 0; k < f32.size(); ++k) EXPECT_NEAR(f16[k], f32[k], 0.04 * f32[k]) << k;
  const auto big32 = unit_losses("float32", 1e5, log_big32), big = unit_losses("float16", 1e5, log_big);
  EXPECT_NE(log_big.find("test: unit 'conv1' has activations beyond float16's range; cached in float32"), std::string::npos)
      << log_big;
  EXPECT_EQ(big[0], big32[0]);
}
