#pragma once
// Elementwise kernels compiled for the machine that runs them: GCC compiles a function marked
// XDQ_VECTOR_CLONES three times (x86-64-v4: AVX-512; x86-64-v3: AVX2 and FMA; baseline x86-64) and the
// loader picks one on first call, so one binary runs everywhere and vectorizes 8-16 floats wide where
// the CPU can (the baseline's SSE2 has no 32-bit integer multiply and works 4 floats at a time). Every
// clone gives the same bits: xdq_core is compiled with -ffp-contract=off (no clone fuses a multiply and
// an add the others round twice; a kernel that wants one rounding says std::fma, a library call on the
// baseline), and none reorders a sum (no -ffast-math). Inside a clone, only inlined code gets its
// instructions: the kernels' loops live in the marked functions, not in lambdas handed to at::parallel_for.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define XDQ_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define XDQ_VECTOR_CLONES
#endif
