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

// The folder holding libxdq_core.so: the build's lib/ or an installed prefix's lib/. Plugins and configs are
// found from it, so an installed tree works wherever it is copied.
std::string core_library_dir();

}  // namespace xdq
