#pragma once
// LibTorch reads a TorchScript archive without checking the CRC-32 its zip directory records for each
// entry, so flipped bytes in a tensor load and run as other weights. This checks every entry first.
#include <string>

namespace xdq {

// An Error naming `path` and the entry when a CRC-32 differs, the zip structure is damaged, or an entry
// uses a compression other than stored or deflate.
void verify_zip_crcs(const std::string& path);

}  // namespace xdq
