#include "xdq/files.h"

#include <boost/dll/runtime_symbol_info.hpp>

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <vector>
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

void write_files_atomically(const std::string& dir, const std::map<std::string, std::string>& files) {
  const std::filesystem::path root = std::filesystem::absolute(dir).lexically_normal();
  for (const auto& [name, content] : files) {  // names may hold sub-folders ("model_w4a4/analysis.json"), never ".."
    const std::filesystem::path relative = (root / name).lexically_normal().lexically_relative(root);
    if (relative.empty() || *relative.begin() == ".." || std::filesystem::path(name).is_absolute())
      throw Error(dir + ": refusing to write '" + name + "' outside the output folder");
  }
  std::error_code ec;
  const bool created = !std::filesystem::exists(root);
  std::filesystem::create_directories(root, ec);
  if (ec) throw Error(dir + ": cannot create output folder (" + ec.message() + ")");
  std::vector<std::pair<std::filesystem::path, std::filesystem::path>> staged;  // (temporary, final), registered before writing
  try {
    for (const auto& [name, content] : files) {
      const std::filesystem::path final_path = root / name;
      std::filesystem::create_directories(final_path.parent_path());
      staged.emplace_back(temporary_name(final_path.string()), final_path);
      std::ofstream out(staged.back().first, std::ios::binary);
      out << content;
      out.close();
      if (!out) throw Error(final_path.string() + ": write failed (disk full?)");
    }
    for (const auto& [tmp, final_path] : staged) std::filesystem::rename(tmp, final_path);
  } catch (const std::exception& e) {
    for (const auto& s : staged) std::filesystem::remove(s.first, ec);
    if (created) std::filesystem::remove_all(root, ec);
    if (dynamic_cast<const Error*>(&e)) throw;
    throw Error(dir + ": cannot write the results (" + e.what() + ")");
  }
}

std::string core_library_dir() {
  boost::dll::fs::error_code ec;
  const auto self = boost::dll::this_line_location(ec);
  return ec ? std::string() : self.parent_path().string();
}

}  // namespace xdq
