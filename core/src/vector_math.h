#pragma once
// exp and log for loops inside XDQ_VECTOR_CLONES kernels. A call to the C library's expf or powf stops GCC
// from vectorizing the loop around it (AdaRound's soft rounding of a 512x512x3x3 convolution took as long
// as one of its forward convolutions), so these are written with +, *, / and bit operations only: inlined
// into a clone they vectorize, and every clone gives the same bits (no contraction, no reordering).
// They compute in double with a relative error below 1e-13, so a float32 result rounded from them is the
// correctly rounded one but for values within 1e-13 (relative) of a rounding boundary.
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace xdq::vector_math {

[[gnu::always_inline]] inline std::uint64_t bits_of(double x) {
  std::uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}
[[gnu::always_inline]] inline double double_of(std::uint64_t b) {
  double x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

// c[0] x^(N-1) + ... + c[N-1], by Horner's rule (a loop of constant length, unrolled before vectorization).
template <std::size_t N>
[[gnu::always_inline]] inline double horner(double x, const double (&c)[N]) {
  double p = c[0];
  for (std::size_t i = 1; i < N; ++i) p = p * x + c[i];
  return p;
}

// Adding 1.5 * 2^52 rounds a double of magnitude below 2^51 to an integer, which then sits in the low
// bits of the sum's pattern: integer <-> double conversions that vectorize without AVX-512's.
constexpr double kRoundingShift = 0x1.8p52;
// ln 2 split so that k * kLn2High is exact for |k| < 2^20 (fdlibm's split).
constexpr double kLn2High = 0x1.62e42feep-1, kLn2Low = 0x1.a39ef35793c76p-33;

// e^x for x in [-708, 709], where it is a normal double; x beyond is clamped (a float32 rounded from the
// result is then 0 or infinity, as from e^x), NaN stays NaN. x = k ln 2 + r with |r| <= ln 2 / 2, e^r by
// its Taylor series to r^11 (truncation below 7e-15).
[[gnu::always_inline]] inline double exp_double(double x) {
  x = x < -708.0 ? -708.0 : x;
  x = x > 709.0 ? 709.0 : x;
  const double shifted = x * 0x1.71547652b82fep0 + kRoundingShift;  // x / ln 2, rounded
  const double k = shifted - kRoundingShift;
  const double r = (x - k * kLn2High) - k * kLn2Low;
  constexpr double kTaylor[] = {1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0,
                                 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0};  // 1/11!, ..., 1/0!
  const double p = horner(r, kTaylor);
  const std::uint64_t exponent = bits_of(shifted) - bits_of(kRoundingShift) + 1023;  // k + bias
  return p * double_of(exponent << 52);
}

// ln x for a positive normal double (every positive float32 is one). x = 2^e m with m in
// [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s), s = (m - 1)/(m + 1), |s| <= 0.172, by its series to s^17
// (truncation below 2e-16).
[[gnu::always_inline]] inline double log_double(double x) {
  const std::uint64_t b = bits_of(x);
  double m = double_of((b & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);  // in [1, 2)
  std::uint64_t biased = b >> 52;
  const bool high = m > 0x1.6a09e667f3bcdp0;  // sqrt(2)
  m = high ? m * 0.5 : m;
  biased = high ? biased + 1 : biased;
  const double e = double_of(bits_of(kRoundingShift) + biased - 1023) - kRoundingShift;
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  constexpr double kSeries[] = {2.0 / 17.0, 2.0 / 15.0, 2.0 / 13.0, 2.0 / 11.0, 2.0 / 9.0, 2.0 / 7.0, 2.0 / 5.0, 2.0 / 3.0, 2.0};
  const double p = horner(s2, kSeries);
  return e * kLn2High + (e * kLn2Low + s * p);
}

// x -> x^y for x in [0, 1], y fixed (as float32 pow: 0^y is 0 for y > 0, 1 for y = 0, infinity for y < 0).
// Built outside the loop: GCC does not vectorize a select whose condition is the loop's invariant.
struct PowerOfUnitInterval {
  double y, of_zero;
  explicit PowerOfUnitInterval(double exponent)
      : y(exponent), of_zero(exponent > 0.0 ? 0.0 : (exponent == 0.0 ? 1.0 : __builtin_inf())) {}
  [[gnu::always_inline]] double operator()(double x) const { return x > 0.0 ? exp_double(y * log_double(x)) : of_zero; }
};

}  // namespace xdq::vector_math
