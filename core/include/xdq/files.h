#pragma once
// Files that are either complete or absent: caches and results are written to a temporary name unique
// to the writing process and thread, and renamed into place only when every byte is written. Whatever
// fails on the way (a full disk), the temporary is removed.
#include <functional>
#include <iosfwd>
#include <map>
#include <string>

namespace xdq {

// `path` + ".tmp.<pid>.<thread>.<n>": two writers of the same file never share a temporary.
std::string temporary_name(const std::string& path);

// Calls write(stream) on a temporary file next to `path`, then renames it to `path`. An error (from the
// stream, or thrown by `write`) removes the temporary and propagates as an Error naming `path`.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);

// Writes every file (name -> content, names relative and inside `dir`) atomically: each goes to a
// temporary name first and all are renamed only after all were written; on a failure nothing is left,
// not even the folder if this call created it.
void write_files_atomically(const std::string& dir, const std::map<std::string, std::string>& files);

// An output folder checked before any work: `out` is a folder or can be created, and a file can be made
// in it (or in its nearest existing ancestor) now. Nothing is left behind; an Error naming `out` otherwise.
void check_output_folder(const std::string& out);

// One writer per output folder: an advisory lock (flock) on PATH held while the object lives. The lock
// file lies beside PATH (PARENT/.NAME.lock), so locking creates nothing inside the folder and a refused
// or failed run leaves no folder behind; it is removed when the last holder lets go. Exclusive: the only
// holder (a run, a merge, an export); shared: one of several (`--job K` runs into one sweep folder).
// A second writer gets an Error naming PATH at once; the lock waits for nobody.
class PathLock {
 public:
  enum class Mode { Exclusive, Shared };
  PathLock(const std::string& path, Mode mode, const std::string& what);
  ~PathLock();
  // PARENT/.NAME.lock. A child process whose environment names this file in kLockHeldByParent takes no
  // lock on it: its parent holds the lock for it (`isolation: process`).
  static std::string lock_file(const std::string& path);
  static constexpr const char* kLockHeldByParent = "XDQ_LOCK_HELD_BY_PARENT";
  PathLock(const PathLock&) = delete;
  PathLock& operator=(const PathLock&) = delete;

 private:
  std::string lock_file_;
  int fd_ = -1;
};

// The folder holding libxdq_core.so: the build's lib/ or an installed prefix's lib/. Plugins and configs are
// found from it, so an installed tree works wherever it is copied.
std::string core_library_dir();

// Characters safe in a file name (others become '_').
std::string file_name_safe(const std::string& text);

}  // namespace xdq
