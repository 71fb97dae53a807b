#include "xdq/files.h"

#include <boost/dll/runtime_symbol_info.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <regex>
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
      out.close();
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

void check_output_folder(const std::string& out) {
  namespace fs = std::filesystem;
  const fs::path path = fs::absolute(out).lexically_normal();
  std::error_code ec;
  if (fs::exists(path, ec) && !fs::is_directory(path, ec))
    throw Error(out + ": the output folder exists and is not a folder");
  fs::path existing = path;
  while (!existing.empty() && !fs::exists(existing, ec)) existing = existing.parent_path();
  // A file really made and removed: access() says yes to root on read-only mounts and in /proc.
  const std::string probe = temporary_name((existing / ".xdq_write_probe").string());
  const int fd = fs::is_directory(existing, ec) ? ::open(probe.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600) : -1;
  if (fd < 0)
    throw Error(out + ": the output folder cannot be written (" + existing.string() + " is not a writable folder)");
  ::close(fd);
  ::unlink(probe.c_str());
}

std::string PathLock::lock_file(const std::string& path) {
  const std::filesystem::path target = std::filesystem::absolute(path).lexically_normal();
  return (target.parent_path() / ("." + target.filename().string() + ".lock")).string();
}

PathLock::PathLock(const std::string& path, Mode mode, const std::string& what) : lock_file_(lock_file(path)) {
  if (const char* held = std::getenv(kLockHeldByParent); held && lock_file_ == held) return;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(lock_file_).parent_path(), ec);
  // The file may be removed by its last holder between our open and our lock: then the lock is on a
  // file nobody else will find, so it is taken again on the file the path names now.
  for (;;) {
    fd_ = ::open(lock_file_.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error(path + ": cannot create the lock file " + lock_file_);
    if (::flock(fd_, (mode == Mode::Exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
      ::close(fd_);
      throw Error(path + ": another xdq process is writing " + what + " (it holds " + lock_file_ +
                  "); wait for it to end, or use another --out");
    }
    struct stat held {}, named {};
    if (::fstat(fd_, &held) == 0 && ::stat(lock_file_.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
        held.st_dev == named.st_dev)
      return;
    ::close(fd_);
  }
}

PathLock::~PathLock() {
  if (fd_ < 0) return;
  // The last holder (the one that can make its lock exclusive now) removes the file.
  if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) ::unlink(lock_file_.c_str());
  ::close(fd_);
}

std::string core_library_dir() {
  boost::dll::fs::error_code ec;
  const auto self = boost::dll::this_line_location(ec);
  return ec ? std::string() : self.parent_path().string();
}

std::string file_name_safe(const std::string& text) { return std::regex_replace(text, std::regex("[^A-Za-z0-9._+-]"), "_"); }

}  // namespace xdq
