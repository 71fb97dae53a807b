#include "submit.h"

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <regex>
#include <sstream>

#include "xdq/error.h"
#include "xdq/experiment/analysis_runner.h"
#include "xdq/experiment/plan.h"
#include "xdq/experiment/runner.h"
#include "xdq/files.h"

namespace xdq::cli {

namespace fs = std::filesystem;

namespace {

// Control characters shown as \xNN, so a refusal prints on one line.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c != 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

// Single-quoted for the shell.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// A value written into a batch script must match `syntax`: a newline would end its #SBATCH line and
// make the rest a command; quotes, `$` or backquotes would reach a shell. Nothing is quoted into safety:
// what does not match is refused, naming the option.
void check_script_value(const std::string& option, const std::string& value, const char* syntax, const char* expected) {
  if (!std::regex_match(value, std::regex(syntax)))
    throw Error(option + " '" + printable(value) + "': expected " + expected +
                " (a batch script takes no spaces, quotes, '$', backquotes, ';' or control characters)");
}

// The analysis' files are named apart, so a sweep and its analysis can share one folder.
std::string prefix(const SlurmOptions& o) { return o.analyze ? "analysis_" : ""; }

std::string array_script(const std::string& experiment, const fs::path& dir, const std::string& xdq, std::size_t jobs,
                         const SlurmOptions& o) {
  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# Written by xdq submit for experiment '" << experiment << "': one array task per job of its "
    << (o.analyze ? "analysis" : "plan") << " (" << jobs << " jobs; `xdq " << (o.analyze ? "analyze" : "run")
    << " --dry-run " << (dir / "experiment.yaml").string() << "` lists them).\n"
    << "# Each task keeps its job as a shard in " << (dir / (o.analyze ? "analysis_jobs" : "jobs")).string()
    << "; " << prefix(o) << "merge.sbatch gathers them.\n"
    << "# Models, data, the cache and this folder must be on a filesystem every node sees.\n"
    << "#SBATCH --job-name=xdq-" << experiment << "\n"
    << "#SBATCH --array=0-" << jobs - 1 << (o.max_parallel > 0 ? "%" + std::to_string(o.max_parallel) : "") << "\n"
    << "#SBATCH --cpus-per-task=" << o.cpus_per_task << "\n"
    << "#SBATCH --output=" << (dir / "slurm" / (prefix(o) + "job_%a.out")).string() << "\n";
  if (!o.partition.empty()) s << "#SBATCH --partition=" << o.partition << "\n";
  if (!o.time.empty()) s << "#SBATCH --time=" << o.time << "\n";
  if (o.gpus_per_task > 0) s << "#SBATCH --gpus-per-task=" << o.gpus_per_task << "\n";
  for (const auto& a : o.sbatch_args) s << "#SBATCH " << a << "\n";
  s << "exec " << quoted(xdq) << (o.analyze ? " analyze " : " run ") << quoted((dir / "experiment.yaml").string()) << " --out " << quoted(dir.string())
    << " --job \"$SLURM_ARRAY_TASK_ID\"\n";
  return s.str();
}

std::string merge_script(const std::string& experiment, const fs::path& dir, const std::string& xdq, const SlurmOptions& o) {
  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# Written by xdq submit: gathers the shards of experiment '" << experiment << "' once the array has ended\n"
    << "# (submitted with --dependency=afterany on it, so failed tasks do not block it; it names missing jobs).\n"
    << "#SBATCH --job-name=xdq-" << experiment << "-merge\n"
    << "#SBATCH --cpus-per-task=1\n"
    << "#SBATCH --output=" << (dir / "slurm" / (prefix(o) + "merge.out")).string() << "\n";
  if (!o.partition.empty()) s << "#SBATCH --partition=" << o.partition << "\n";
  s << "exec " << quoted(xdq) << " merge " << quoted(dir.string()) << "\n";
  return s.str();
}

// Runs `command`, returns its standard output (the job id sbatch --parsable prints); an Error otherwise.
std::string run_sbatch(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen((command + " 2>&1").c_str(), "r"), pclose);
  if (!pipe) throw Error("cannot run: " + command);
  std::string out;
  char buffer[512];
  while (std::fgets(buffer, sizeof buffer, pipe.get())) out += buffer;
  const int status = pclose(pipe.release());
  if (status != 0) throw Error("sbatch failed (" + command + "): " + out);
  const std::string id = out.substr(0, out.find_first_of(";\n"));
  if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
    throw Error("sbatch printed no job id (" + command + "): " + out);
  return id;
}

}  // namespace

void check_slurm_options(const SlurmOptions& o, const std::string& out_dir) {
  check_script_value("--partition", o.partition, "([A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*)?",
                     "partition names separated by commas");
  check_script_value("--time", o.time, "(([0-9]+-)?[0-9]+(:[0-9]+){0,2}|UNLIMITED|INFINITE|unlimited|infinite)?",
                     "a Slurm time: minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]]");
  for (const auto& a : o.sbatch_args)
    check_script_value("--sbatch-arg", a, "--?[A-Za-z][A-Za-z0-9-]*(=[A-Za-z0-9_.,:=/@%+*|&!\\[\\]-]*)?",
                       "one sbatch option such as --mem=4G");
  check_script_value("--out", fs::absolute(out_dir).lexically_normal().string(), "[A-Za-z0-9_.,:=/@%+~-]+",
                     "a folder path of letters, digits and _.,:=/@%+~-");
}

int submit_to_slurm(const ExperimentConfig& cfg_in, const std::string& out_dir, const std::string& xdq_binary,
                    const SlurmOptions& options) {
  check_slurm_options(options, out_dir);
  const PathLock lock(out_dir, PathLock::Mode::Exclusive, "into this folder");
  ExperimentConfig cfg = cfg_in;
  cfg.execution.threads = options.cpus_per_task;  // each task uses the CPUs it was given
  // A folder of another config's shards is refused before writing.
  check_resumable([&cfg] { return resolved_config_yaml(cfg); }, out_dir, options.analyze ? ShardKind::Analysis : ShardKind::Run);
  const std::size_t jobs = options.analyze ? analysis_job_ids(cfg.models, cfg.quantization.bits).size() : plan_experiment(cfg).jobs.size();
  const fs::path dir = fs::absolute(out_dir).lexically_normal();
  const std::string xdq = fs::absolute(xdq_binary).string();
  fs::create_directories(dir / "slurm");
  write_file_atomically((dir / "experiment.yaml").string(),
                        [&](std::ostream& out) { out << resolved_config_yaml(cfg, YAML::Node()); });
  const std::string array = (dir / "slurm" / (prefix(options) + "array.sbatch")).string();
  const std::string merge = (dir / "slurm" / (prefix(options) + "merge.sbatch")).string();
  write_file_atomically(array, [&](std::ostream& out) { out << array_script(cfg.name, dir, xdq, jobs, options); });
  write_file_atomically(merge, [&](std::ostream& out) { out << merge_script(cfg.name, dir, xdq, options); });
  std::cout << "wrote " << array << " (" << jobs << " array tasks) and " << merge << "\n";
  if (options.dry_run) {
    std::cout << "submit with: id=$(sbatch --parsable " << array << ") && sbatch --parsable --dependency=afterany:$id "
              << merge << "\n";
    return 0;
  }
  const std::string array_id = run_sbatch("sbatch --parsable " + quoted(array));
  const std::string merge_id = run_sbatch("sbatch --parsable --dependency=afterany:" + array_id + " " + quoted(merge));
  std::cout << "submitted array job " << array_id << " and merge job " << merge_id << "\n";
  return 0;
}

}  // namespace xdq::cli
