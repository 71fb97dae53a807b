#include "xdq/report/experiment_report.h"

#include <filesystem>

#include <torch/csrc/jit/serialization/pickle.h>

#include <algorithm>
#include <cctype>
#include <iomanip>
#include <sstream>

#include "xdq/data/dataset.h"
#include "xdq/report/png.h"
#include "xdq/report/results_tables.h"
#include "xdq/report/score_validation.h"

namespace xdq {

namespace {

// A reconstruction run's loss curves (unit,iteration,reconstruction_loss,...) as a log-scale chart.
std::string curves_png(const std::string& run, const std::string& csv) {
  std::vector<std::string> units;
  std::vector<std::vector<std::pair<double, double>>> series;
  std::istringstream lines(csv);
  std::string line;
  std::getline(lines, line);  // header
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string unit, iteration, loss;
    std::getline(fields, unit, ',');
    std::getline(fields, iteration, ',');
    std::getline(fields, loss, ',');
    if (units.empty() || units.back() != unit) {
      units.push_back(unit);
      series.emplace_back();
    }
    series.back().emplace_back(std::stod(iteration), std::stod(loss));
  }
  return render_curves_png(run + ": reconstruction loss per unit (log scale)", units, series, true);
}

// One table (and heatmap of clipped %) per calibration domain: layers x test domains.
std::string layer_shift_markdown(const ExperimentResults& results, std::map<std::string, std::string>& files) {
  if (results.layer_shift.empty()) return "";
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << "## Per-layer shift\n\nFor ranges calibrated on A: the share of each quantized "
      << "activation's values that fall outside its range on B (clipped %), and the total-variation distance between "
      << "the activation histograms on A and on B (TV, 0 = same, 1 = disjoint).\n\n";
  std::vector<std::string> groups;
  for (const auto& l : results.layer_shift) {
    const std::string g = l.model + " " + l.setting + ", ranges from " + l.calibration_domain;
    if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
  }
  for (const auto& g : groups) {
    std::vector<std::string> layers, domains;
    std::map<std::pair<std::string, std::string>, const LayerShiftRow*> cell;
    for (const auto& l : results.layer_shift) {
      if (l.model + " " + l.setting + ", ranges from " + l.calibration_domain != g) continue;
      if (std::find(layers.begin(), layers.end(), l.layer) == layers.end()) layers.push_back(l.layer);
      if (std::find(domains.begin(), domains.end(), l.domain) == domains.end()) domains.push_back(l.domain);
      cell[{l.layer, l.domain}] = &l;
    }
    out << "#### " << g << ": clipped % / TV\n\n| layer |";
    for (const auto& d : domains) out << " " << d << " |";
    out << "\n|---|";
    for (std::size_t j = 0; j < domains.size(); ++j) out << "---:|";
    out << "\n";
    std::vector<std::vector<double>> clipped;
    for (const auto& layer : layers) {
      out << "| " << layer << " |";
      clipped.emplace_back();
      for (const auto& d : domains) {
        const LayerShiftRow* r = cell[{layer, d}];
        out << " " << 100 * r->clipped_fraction << " / " << r->tv_distance << " |";
        clipped.back().push_back(100 * r->clipped_fraction);
      }
      out << "\n";
    }
    out << "\n";
    if (image_output_available()) {
      std::string file = "layer_shift_" + g + ".png";
      for (char& c : file)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_') c = '_';
      files[file] = render_heatmap_png(g + ": clipped %", layers, domains, clipped);
      out << "![" << g << "](" << file << ")\n\n";
    }
  }
  return out.str();
}

}  // namespace

namespace {


// Per setting: the heatmap (first row FP32 on each test domain, the reference every cell is read
// against) and the tables of gaps.
std::string gap_matrices_markdown(const ExperimentResults& results, std::map<std::string, std::string>& files) {
  std::string body = "\n## Cross-domain gap matrices\n\n";
  for (const GapMatrix& m : gap_matrices(results)) {
    std::string file = "gap_" + m.model + "_" + m.setting + ".png";
    std::replace(file.begin(), file.end(), '/', '_');
    if (image_output_available()) {
      std::vector<std::vector<double>> percent{m.fp32_top1};
      percent.insert(percent.end(), m.quant_top1.begin(), m.quant_top1.end());
      for (auto& row : percent)
        for (auto& v : row) v *= 100;
      std::vector<std::string> rows{"FP32"};
      rows.insert(rows.end(), m.calibration_domains.begin(), m.calibration_domains.end());
      files[file] = render_heatmap_png(m.model + " " + m.setting + ": quantized top-1 (%)", rows, m.test_domains, percent);
      body += "![" + m.setting + "](" + file + ")\n\n";
    }
    body += gap_matrix_markdown(m);
  }
  return body;
}

std::string curves_markdown(const ExperimentRun& run, std::map<std::string, std::string>& files) {
  std::string curves;
  for (const auto& [name, csv] : run.data_files)
    if (image_output_available() && name.size() > 11 && name.compare(name.size() - 11, 11, "_curves.csv") == 0) {
      const std::string png = name.substr(0, name.size() - 4) + ".png";
      files[png] = curves_png(name.substr(0, name.size() - 11), csv);
      curves += "![" + png + "](" + png + ")\n\n";
    }
  return curves.empty() ? "" : "\n## Reconstruction loss per unit\n\nEach run's `*_curves.csv` holds the sampled losses.\n\n" + curves;
}

// `sweeps`: the experiment sweeps calibration or test domains (ResultsSource::sweeps_domains).
std::string samples_markdown(bool sweeps, const ExperimentRun& run, std::map<std::string, std::string>& files) {
  if (!image_output_available()) return "";
  std::map<std::string, std::string> pictures;  // name -> PNG; a test domain's strip replaces its calibration strip
  for (const SampleImages& s : run.samples) pictures[s.name] = render_grid_png(s.images, s.columns, 3);
  std::string body;
  if (sweeps) {
    body += "## Domains (samples)\n\n";
    for (const auto& [name, png] : pictures)
      if (name.rfind("domain_", 0) == 0) body += "`" + name.substr(7) + "` ![](" + name + ".png)\n\n";
  }
  std::string grids;
  for (const auto& [name, png] : pictures)
    if (name.rfind("synthesized_", 0) == 0) grids += "`" + name.substr(12) + "`\n\n![](" + name + ".png)\n\n";
  if (!grids.empty()) body += "## Synthesized calibration images\n\nThe first 32 of each set (pixels clipped to [0, 1]).\n\n" + grids;
  for (const auto& [name, png] : pictures) files[name + ".png"] = png;
  return body;
}

}  // namespace

namespace {
// Every synthesized calibration set as sets/<domain>_<model>_n<count>_s<seed>_<content hash>.pt, a dict
// {"images": [N, C, H, W] pixels before the model's normalization, "labels" when the synthesizer gives
// them} that torch.load reads; a set whose cache file is gone is
// named in the report instead.
std::string synthesized_sets(const ExperimentRun& run, std::map<std::string, std::string>& files) {
  std::string missing;
  for (const auto& [name, cache_file] : run.synthesized_sets) {
    if (!std::filesystem::is_regular_file(cache_file)) {
      missing += "\n- `" + name + "`: its cache file " + cache_file + " is gone";
      continue;
    }
    const Dataset set = load_dataset_file(cache_file);
    c10::Dict<std::string, at::Tensor> dict;
    dict.insert("images", set.images);
    if (set.labeled()) dict.insert("labels", set.labels);
    const std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(dict));
    files["sets/" + name] = std::string(bytes.begin(), bytes.end());
  }
  return missing.empty() ? "" : "\nSynthesized sets not saved:" + missing + "\n";
}
}  // namespace

std::map<std::string, std::string> experiment_report(const ExperimentRun& run) {
  std::map<std::string, std::string> files = run.data_files;
  const ResultsSource& source = run.source;
  std::ostringstream header;
  header << "Source: `" << source.file << "`; preset `" << source.preset << "`, weight ranges `" << source.weight_range
         << "`, seed " << source.seed << ". Drop = quantized minus FP32 top-1, in points.\n";
  std::string body = results_markdown(run.results, header.str());
  body += selection_markdown(run.results);
  body += score_validation_markdown(run.results, files);
  const bool sweeps = source.sweeps_domains;
  if (sweeps) body += gap_matrices_markdown(run.results, files) + layer_shift_markdown(run.results, files);
  body += curves_markdown(run, files);
  body += samples_markdown(sweeps, run, files);
  body += synthesized_sets(run, files);
  files["config.resolved.yaml"] = run.resolved_config;
  files["results.json"] = results_json(run.results);
  files["results.csv"] = results_csv(run.results);
  if (!run.results.layer_shift.empty()) files["layer_shift.csv"] = layer_shift_csv(run.results);
  files["report.md"] = body;
  return files;
}

}  // namespace xdq
