#include "xdq/experiment/results.h"

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include <nlohmann/json.hpp>

#include "xdq/error.h"

namespace xdq {

namespace fs = std::filesystem;

std::string results_json(const ExperimentResults& results) {
  nlohmann::ordered_json root;
  root["experiment"] = results.experiment;
  root["runs"] = nlohmann::ordered_json::array();
  for (const auto& r : results.runs) {
    nlohmann::ordered_json run;
    run["id"] = r.id;
    run["model"] = r.model;
    run["w_bits"] = r.w_bits;
    run["a_bits"] = r.a_bits;
    run["calibrator"] = r.calibrator;
    run["rounding"] = r.rounding;
    run["calibration"] = {{"source", r.calibration_source}, {"count", r.calibration_count}};
    run["results"] = nlohmann::ordered_json::array();
    for (const auto& d : r.results)
      run["results"].push_back(
          {{"domain", d.domain}, {"n", d.n}, {"fp32_top1", d.fp32_top1}, {"quant_top1", d.quant_top1}});
    run["seconds"] = r.seconds;
    root["runs"].push_back(run);
  }
  return root.dump(2) + "\n";
}

std::string results_csv(const ExperimentResults& results) {
  std::ostringstream out;
  out << "id,model,w_bits,a_bits,calibrator,rounding,calibration_source,calibration_count,domain,n,fp32_top1,quant_top1,seconds\n";
  out << std::setprecision(6);
  for (const auto& r : results.runs)
    for (const auto& d : r.results)
      out << r.id << "," << r.model << "," << r.w_bits << "," << r.a_bits << "," << r.calibrator << "," << r.rounding
          << "," << r.calibration_source << "," << r.calibration_count << "," << d.domain << "," << d.n << ","
          << d.fp32_top1 << "," << d.quant_top1 << "," << r.seconds << "\n";
  return out.str();
}

std::string results_markdown(const ExperimentResults& results, const std::string& header) {
  std::ostringstream out;
  out << "# " << results.experiment << "\n\n" << header << "\n";
  out << "| model | bits | calibrator | rounding | calibration | test domain | n | FP32 top-1 | quantized top-1 | drop (pt) |\n";
  out << "|---|---|---|---|---|---|---:|---:|---:|---:|\n";
  out << std::fixed;
  for (const auto& r : results.runs)
    for (const auto& d : r.results)
      out << "| " << r.model << " | w" << r.w_bits << "a" << r.a_bits << " | " << r.calibrator << " | " << r.rounding
          << " | " << r.calibration_source << " (" << r.calibration_count << ") | " << d.domain << " | " << d.n
          << " | " << std::setprecision(2) << 100 * d.fp32_top1 << " % | " << 100 * d.quant_top1 << " % | "
          << std::showpos << 100 * (d.quant_top1 - d.fp32_top1) << std::noshowpos << " |\n";
  return out.str();
}

void write_files_atomically(const std::string& dir, const std::map<std::string, std::string>& files) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir + ": cannot create output folder (" + ec.message() + ")");
  std::vector<std::pair<fs::path, fs::path>> staged;
  try {
    for (const auto& [name, content] : files) {
      const fs::path final_path = fs::path(dir) / name;
      const fs::path tmp = fs::path(dir) / ("." + name + ".partial");
      std::ofstream out(tmp, std::ios::binary);
      out << content;
      out.close();
      if (!out) throw Error(tmp.string() + ": write failed");
      staged.emplace_back(tmp, final_path);
    }
  } catch (...) {
    for (const auto& s : staged) fs::remove(s.first, ec);
    throw;
  }
  for (const auto& [tmp, final_path] : staged) fs::rename(tmp, final_path);
}

}  // namespace xdq
