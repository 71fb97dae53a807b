// ONNX Runtime through tools/onnxruntime_bridge.js: one Node process per runtime, fed batches over a Unix
// socket pair (its stdin and stdout) in the frames the bridge's header describes; its speed through
// tools/onnxruntime_speed.js, whose JSON answer comes back the same way.
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "writers.h"
#include "xdq/error.h"
#include "xdq/export/runtime.h"

extern char** environ;

namespace xdq {

namespace fs = std::filesystem;

namespace {

constexpr std::uint32_t kHello = 0x31545258, kQuit = 0xffffffff, kError = 0xfffffffe;

// `name` found on PATH ("" when it is not).
std::string on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  for (std::size_t start = 0; start <= dirs.size();) {
    const std::size_t end = std::min(dirs.find(':', start), dirs.size());
    const fs::path candidate = fs::path(dirs.substr(start, end - start)) / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    start = end + 1;
  }
  return "";
}

std::string package_version(const fs::path& package_json) {
  std::ifstream in(package_json);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t key = text.find("\"version\"");
  if (key == std::string::npos) return "";
  const std::size_t open = text.find('"', text.find(':', key) + 1);
  return open == std::string::npos ? "" : text.substr(open + 1, text.find('"', open + 1) - open - 1);
}

void write_all(int fd, const void* data, std::size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(std::string("ONNX Runtime bridge: cannot send a batch (") + std::strerror(errno) + ")");
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
}

void read_all(int fd, void* data, std::size_t bytes) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::recv(fd, p, bytes, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error("ONNX Runtime bridge: the Node process ended without an answer");
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
}

std::uint32_t read_u32(int fd) {
  std::uint32_t v = 0;
  read_all(fd, &v, sizeof v);
  return v;
}

std::string read_text(int fd) {
  std::string s(read_u32(fd), '\0');
  read_all(fd, s.data(), s.size());
  return s;
}

// The first u32 of a hello or reply; an error frame becomes an Error with the bridge's message.
std::uint32_t read_header(int fd) {
  const std::uint32_t first = read_u32(fd);
  if (first == kError) throw Error("ONNX Runtime: " + read_text(fd));
  return first;
}

struct NodeProcess {
  int socket = -1;  // the script's stdin and stdout (and stderr, when asked)
  pid_t pid = -1;
};

// `node script args...` with NODE_PATH naming the onnxruntime-node package's folder.
NodeProcess start_node(const std::string& script, const std::vector<std::string>& script_args, bool with_stderr) {
  if (const std::string why = OnnxRuntime::unavailable_reason(); !why.empty()) throw Error("ONNX Runtime: " + why);
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
    throw Error(std::string("ONNX Runtime: socketpair: ") + std::strerror(errno));
  std::vector<std::string> args = {"node", script};
  args.insert(args.end(), script_args.begin(), script_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_storage = {"NODE_PATH=" + OnnxRuntime::node_modules()};
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "NODE_PATH=", 10) != 0) env_storage.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pair[1], 0);
  posix_spawn_file_actions_adddup2(&actions, pair[1], 1);
  if (with_stderr) posix_spawn_file_actions_adddup2(&actions, pair[1], 2);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, on_path("node").c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(pair[1]);
  if (spawned != 0) {
    ::close(pair[0]);
    throw Error(std::string("ONNX Runtime: cannot start node: ") + std::strerror(spawned));
  }
  return {pair[0], pid};
}

template <class Number>
std::string joined(const std::vector<Number>& values) {  // "1,64"
  std::string out;
  for (Number v : values) out += (out.empty() ? "" : ",") + std::to_string(v);
  return out;
}

}  // namespace

std::vector<RuntimeTiming> time_onnxruntime(const std::string& dir, const std::vector<std::int64_t>& input_shape,
                                            const std::vector<int>& batches, const std::vector<int>& threads, int rounds) {
  const std::string script = (fs::path(XDQ_ONNXRUNTIME_BRIDGE).parent_path() / "onnxruntime_speed.js").string();
  const NodeProcess node = start_node(
      script,
      {dir, joined(input_shape), "--batches", joined(batches), "--threads",
       joined(threads), "--rounds", std::to_string(rounds), "--json"},
      true);
  std::string answer;
  char buffer[4096];
  for (ssize_t n; (n = ::recv(node.socket, buffer, sizeof buffer, 0)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    answer.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(node.socket);
  int status = 0;
  ::waitpid(node.pid, &status, 0);
  while (!answer.empty() && std::isspace(static_cast<unsigned char>(answer.back()))) answer.pop_back();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw Error("ONNX Runtime timing of " + dir + ": " + answer);
  std::vector<RuntimeTiming> timings;
  for (const nlohmann::json& t : nlohmann::json::parse(answer))
    timings.push_back({t.at("batch").get<int>(), t.at("threads").get<int>(), t.at("float_ms").get<double>(),
                       t.at("int8_ms").get<double>()});
  return timings;
}

std::string OnnxRuntime::node_modules() {
  if (const char* dir = std::getenv("XDQ_ONNXRUNTIME_NODE_MODULES")) return dir;
  return XDQ_ONNXRUNTIME_NODE_MODULES;
}

std::string OnnxRuntime::unavailable_reason() {
  if (on_path("node").empty()) return "Node.js ('node') is not on PATH (tools/install-deps.sh installs nodejs)";
  if (!fs::exists(fs::path(node_modules()) / "onnxruntime-node" / "package.json"))
    return "onnxruntime-node is not installed in " + node_modules() +
           " (tools/install-deps.sh installs it; XDQ_ONNXRUNTIME_NODE_MODULES names another folder)";
  if (!fs::exists(XDQ_ONNXRUNTIME_BRIDGE)) return std::string(XDQ_ONNXRUNTIME_BRIDGE) + " is missing";
  return "";
}

OnnxRuntime::OnnxRuntime(const std::string& model, const std::string& probe_model, const std::string& optimized_out,
                         int threads) {
  std::vector<std::string> args = {std::to_string(std::max(threads, 1)), optimized_out, model};
  if (!probe_model.empty()) args.push_back(probe_model);
  const NodeProcess node = start_node(XDQ_ONNXRUNTIME_BRIDGE, args, false);
  socket_ = node.socket;
  pid_ = node.pid;
  try {
    if (read_header(socket_) != kHello) throw Error("ONNX Runtime bridge: unexpected greeting");
    outputs_.resize(read_u32(socket_));
    for (auto& names : outputs_) {
      names.resize(read_u32(socket_));
      for (auto& n : names) n = read_text(socket_);
    }
  } catch (...) {
    shut_down();
    throw;
  }
  int8_layers_ = exporting::integer_kernels(optimized_out);
}

OnnxRuntime::~OnnxRuntime() { shut_down(); }

void OnnxRuntime::shut_down() {
  if (socket_ >= 0) {
    const std::uint32_t quit = kQuit;
    ::send(socket_, &quit, sizeof quit, MSG_NOSIGNAL);
    ::close(socket_);
    socket_ = -1;
  }
  if (pid_ > 0) {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
}

std::vector<at::Tensor> OnnxRuntime::request(std::uint32_t session, const at::Tensor& input) {
  const at::Tensor x = input.to(at::kCPU, at::kFloat).contiguous();
  const std::uint32_t head[2] = {session, static_cast<std::uint32_t>(x.dim())};
  write_all(socket_, head, sizeof head);
  const std::vector<std::int64_t> dims(x.sizes().begin(), x.sizes().end());
  write_all(socket_, dims.data(), dims.size() * sizeof(std::int64_t));
  write_all(socket_, x.data_ptr<float>(), static_cast<std::size_t>(x.numel()) * sizeof(float));
  const std::uint32_t count = read_header(socket_);
  std::vector<at::Tensor> out;
  for (std::uint32_t k = 0; k < count; ++k) {
    std::vector<std::int64_t> shape(read_u32(socket_));
    read_all(socket_, shape.data(), shape.size() * sizeof(std::int64_t));
    at::Tensor t = at::empty(shape, at::kFloat);
    read_all(socket_, t.data_ptr<float>(), static_cast<std::size_t>(t.numel()) * sizeof(float));
    out.push_back(t);
  }
  return out;
}

at::Tensor OnnxRuntime::forward(const at::Tensor& input) { return request(0, input).at(0); }

std::vector<at::Tensor> OnnxRuntime::forward(const at::Tensor& input, const std::vector<std::string>& names) {
  if (outputs_.size() < 2) throw Error("ONNX Runtime: no model with intermediate outputs was given");
  const std::vector<at::Tensor> all = request(1, input);
  std::vector<at::Tensor> out;
  for (const std::string& name : names) {
    const auto it = std::find(outputs_[1].begin(), outputs_[1].end(), name);
    if (it == outputs_[1].end()) throw Error("ONNX Runtime: the probe model has no output '" + name + "'");
    out.push_back(all.at(static_cast<std::size_t>(it - outputs_[1].begin())));
  }
  return out;
}

std::string OnnxRuntime::name() const {
  return "ONNX Runtime " + package_version(fs::path(node_modules()) / "onnxruntime-node" / "package.json");
}

}  // namespace xdq
