#pragma once
// Intra-op threads: LibTorch defaults to one thread on small machines, so xdq always sets it.
namespace xdq {
// 0 means all hardware threads. Returns the count in effect.
int apply_thread_count(int requested);
}  // namespace xdq
