#include "clients/ctl/placement_file.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace hecate::ctl {

namespace pl = placement;

namespace {

absl::Status Bad(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

// The layers with every holder list still empty, shaped as the model.
std::vector<pl::LayerPlan> Empty(const pl::ModelSpec& model) {
  std::vector<pl::LayerPlan> layers(model.num_layers());
  for (int l = 0; l < model.num_layers(); ++l) {
    layers[l].owner.assign(model.layers[l].num_experts, -1);
    layers[l].replicas.resize(model.layers[l].num_experts);
  }
  return layers;
}

absl::StatusOr<std::vector<pl::LayerPlan>> ParseCsv(const std::string& contents,
                                                    const std::string& name,
                                                    const pl::Cluster& cluster,
                                                    const pl::ModelSpec& model) {
  std::vector<pl::LayerPlan> layers = Empty(model);
  std::istringstream in(contents);
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const std::string where = absl::StrCat(name, ":", line_no);
    const absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || text[0] == '#' || absl::StartsWith(text, "layer")) continue;
    const std::vector<absl::string_view> f = absl::StrSplit(text, ',');
    int l = 0, e = 0;
    if (f.size() != 3 || !absl::SimpleAtoi(f[0], &l) || !absl::SimpleAtoi(f[1], &e)) {
      return Bad(where, "expected 'layer,expert,devices' (devices separated by ';' or spaces)");
    }
    if (l < 0 || l >= model.num_layers() || e < 0 || e >= model.layers[l].num_experts) {
      return Bad(where, absl::StrCat("layer ", l, " expert ", e, " is not in the model"));
    }
    if (layers[l].owner[e] >= 0) {
      return Bad(where, absl::StrCat("layer ", l, " expert ", e, " is listed twice"));
    }
    std::vector<pl::DeviceId> holders;
    for (absl::string_view tok : absl::StrSplit(f[2], absl::ByAnyChar("; "), absl::SkipEmpty())) {
      int d = 0;
      if (!absl::SimpleAtoi(tok, &d) || d < 0 || d >= cluster.num_devices()) {
        return Bad(where, absl::StrCat("device '", tok, "' is not in the cluster (0..",
                                       cluster.num_devices() - 1, ")"));
      }
      if (std::find(holders.begin(), holders.end(), d) != holders.end()) {
        return Bad(where, absl::StrCat("device ", d, " is listed twice"));
      }
      holders.push_back(d);
    }
    if (holders.empty()) return Bad(where, "no device holds the expert");
    layers[l].owner[e] = holders.front();
    std::sort(holders.begin(), holders.end());
    layers[l].replicas[e] = std::move(holders);
  }
  for (int l = 0; l < model.num_layers(); ++l) {
    for (int e = 0; e < model.layers[l].num_experts; ++e) {
      if (layers[l].owner[e] < 0) {
        return Bad(name, absl::StrCat("layer ", l, " expert ", e, " has no line"));
      }
    }
  }
  return layers;
}

// A JSON number that is a whole number in [0, limit).
bool Index(const google::protobuf::Value& v, int limit, int* out) {
  if (v.kind_case() != google::protobuf::Value::kNumberValue) return false;
  const double x = v.number_value();
  if (x != std::floor(x) || x < 0 || x >= limit) return false;
  *out = static_cast<int>(x);
  return true;
}

absl::StatusOr<std::vector<pl::LayerPlan>> ParsePhy2Log(const std::string& contents,
                                                        const std::string& name,
                                                        const pl::Cluster& cluster,
                                                        const pl::ModelSpec& model) {
  google::protobuf::Struct root;
  if (!google::protobuf::util::JsonStringToMessage(contents, &root).ok()) {
    return Bad(name, "not valid JSON");
  }
  const auto& fields = root.fields();
  const int devices = cluster.num_devices();
  if (auto it = fields.find("num_gpus"); it != fields.end()) {
    int n = 0;
    if (!Index(it->second, devices + 1, &n) || n != devices) {
      return Bad(name, absl::StrCat("num_gpus must equal the cluster's ", devices, " devices"));
    }
  }
  auto it = fields.find("phy2log");
  if (it == fields.end() || it->second.kind_case() != google::protobuf::Value::kListValue) {
    return Bad(name, "expected {\"phy2log\": [[logical expert of each physical slot], ...]}");
  }
  const google::protobuf::ListValue& rows = it->second.list_value();
  if (rows.values_size() != model.num_layers()) {
    return Bad(name, absl::StrCat("phy2log has ", rows.values_size(), " layers; the model has ",
                                  model.num_layers()));
  }
  std::vector<pl::LayerPlan> layers = Empty(model);
  for (int l = 0; l < model.num_layers(); ++l) {
    const google::protobuf::Value& row = rows.values(l);
    if (row.kind_case() != google::protobuf::Value::kListValue) {
      return Bad(name, absl::StrCat("phy2log[", l, "] is not a list"));
    }
    const int slots = row.list_value().values_size();
    if (slots == 0 || slots % devices != 0) {
      return Bad(name,
                 absl::StrCat("phy2log[", l, "] has ", slots,
                              " slots, not a positive multiple of the ", devices, " devices"));
    }
    const int per_device = slots / devices;
    const int experts = model.layers[l].num_experts;
    for (int s = 0; s < slots; ++s) {
      int e = 0;
      if (!Index(row.list_value().values(s), experts, &e)) {
        return Bad(name, absl::StrCat("phy2log[", l, "][", s,
                                      "] is not an expert of the layer (0..", experts - 1, ")"));
      }
      std::vector<pl::DeviceId>& holders = layers[l].replicas[e];
      const pl::DeviceId d = s / per_device;
      auto at = std::lower_bound(holders.begin(), holders.end(), d);
      if (at == holders.end() || *at != d) holders.insert(at, d);
    }
    for (int e = 0; e < experts; ++e) {
      if (layers[l].replicas[e].empty()) {
        return Bad(name, absl::StrCat("phy2log[", l, "] has no slot for expert ", e));
      }
      layers[l].owner[e] = layers[l].replicas[e].front();
    }
  }
  return layers;
}

}  // namespace

absl::StatusOr<std::vector<pl::LayerPlan>> ParsePlacement(const std::string& contents,
                                                          const std::string& name,
                                                          const pl::Cluster& cluster,
                                                          const pl::ModelSpec& model) {
  const absl::string_view text = absl::StripLeadingAsciiWhitespace(contents);
  absl::StatusOr<std::vector<pl::LayerPlan>> layers =
      !text.empty() && text[0] == '{' ? ParsePhy2Log(contents, name, cluster, model)
                                      : ParseCsv(contents, name, cluster, model);
  if (!layers.ok()) return layers.status();
  for (int l = 0; l < static_cast<int>(layers->size()); ++l) {
    if (absl::Status s = pl::ValidateLayer((*layers)[l], l, cluster, model); !s.ok()) {
      return Bad(name, std::string(s.message()));
    }
  }
  return layers;
}

absl::StatusOr<std::vector<pl::LayerPlan>> ReadPlacement(const std::string& path,
                                                         const pl::Cluster& cluster,
                                                         const pl::ModelSpec& model) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("placement file ", path, " not found"));
  std::stringstream buf;
  buf << in.rdbuf();
  return ParsePlacement(buf.str(), path, cluster, model);
}

}  // namespace hecate::ctl
