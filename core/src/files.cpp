#include "xdq/files.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "xdq/error.h"

namespace xdq {

std::string temporary_name(const std::string& path) {
  static std::atomic<std::uint64_t> counter{0};
  return path + ".tmp." + std::to_string(getpid()) + "." +
         std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id()) % 1000000) + "." +
         std::to_string(counter++);
}

void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write) {
  const std::string temporary = temporary_name(path);
  std::error_code ec;
  try {
    {
      std::ofstream out(temporary, std::ios::binary);
      if (!out) throw Error(path + ": cannot write (" + temporary + " cannot be created)");
      write(out);
      out.flush();
      if (!out) throw Error(path + ": write failed (disk full?)");
    }
    std::filesystem::rename(temporary, path, ec);
    if (ec) throw Error(path + ": cannot move the written file into place (" + ec.message() + ")");
  } catch (...) {
    std::filesystem::remove(temporary, ec);
    throw;
  }
}

}  // namespace xdq
