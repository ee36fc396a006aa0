#include "wire/trace.h"

#include <sstream>

#include "absl/strings/str_cat.h"
#include "hecate/v1/types.pb.h"
#include "wire/convert.h"

namespace hecate::wire {

namespace {
constexpr char kMagic[] = "hecate-trace v1";

std::string Header(const placement::ClusterSpec& cluster, const placement::ModelSpec& model) {
  return absl::StrCat("{\"cluster\": ", ToJson(ToProto(cluster), false),
                      ", \"model\": ", ToJson(ToProto(model), false), "}");
}

void WriteIteration(std::ostream& out, uint64_t iteration, const placement::ModelLoad& load) {
  out << "iteration " << iteration << "\n";
  for (const placement::LoadMatrix& m : load) {
    std::string line;
    for (int d = 0; d < m.num_devices(); ++d) {
      for (int e = 0; e < m.num_experts(); ++e) {
        if (!line.empty()) line += ' ';
        absl::StrAppend(&line, m.at(d, e));
      }
    }
    out << line << "\n";
  }
}
}  // namespace

absl::StatusOr<std::unique_ptr<TraceWriter>> TraceWriter::Open(
    const std::string& path, const placement::ClusterSpec& cluster,
    const placement::ModelSpec& model) {
  auto w = std::unique_ptr<TraceWriter>(new TraceWriter());
  w->out_.open(path, std::ios::trunc);
  if (!w->out_) return absl::PermissionDeniedError(absl::StrCat("cannot write trace ", path));
  w->out_ << kMagic << "\n" << Header(cluster, model) << "\n";
  w->out_.flush();
  return w;
}

absl::Status TraceWriter::Append(uint64_t iteration, const placement::ModelLoad& load) {
  WriteIteration(out_, iteration, load);
  out_.flush();
  return out_ ? absl::OkStatus() : absl::DataLossError("trace write failed");
}

absl::Status WriteTrace(const std::string& path, const Trace& trace) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write trace ", path));
  out << kMagic << "\n" << Header(trace.cluster, trace.model) << "\n";
  for (size_t i = 0; i < trace.loads.size(); ++i)
    WriteIteration(out, trace.iterations[i], trace.loads[i]);
  return out ? absl::OkStatus() : absl::DataLossError("trace write failed");
}

absl::StatusOr<Trace> ReadTrace(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("trace ", path, " not found"));
  std::string line;
  if (!std::getline(in, line) || line != kMagic) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a hecate trace (no '", kMagic, "' line)"));
  }
  if (!std::getline(in, line)) return absl::InvalidArgumentError(absl::StrCat(path, ": no header"));
  // {"cluster": {...}, "model": {...}}: parse with a wrapper message-free approach: split on
  // the top-level keys by parsing into a Struct-like pair of messages.
  const size_t c = line.find("\"cluster\":");
  const size_t m = line.find(", \"model\":");
  if (c == std::string::npos || m == std::string::npos || line.back() != '}') {
    return absl::InvalidArgumentError(absl::StrCat(path, ": malformed header"));
  }
  v1::ClusterSpec cluster;
  v1::ModelSpec model;
  if (!FromJson(line.substr(c + 10, m - c - 10), &cluster).ok() ||
      !FromJson(line.substr(m + 10, line.size() - m - 11), &model).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header does not parse"));
  }
  Trace t;
  t.cluster = FromProto(cluster);
  t.model = FromProto(model);
  absl::StatusOr<placement::Cluster> cl = placement::Cluster::Create(t.cluster);
  if (!cl.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", cl.status().message()));
  const int devices = cl->num_devices();
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    uint64_t iteration = 0;
    if (std::sscanf(line.c_str(), "iteration %lu", &iteration) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": expected 'iteration N', got '", line.substr(0, 40), "'"));
    }
    placement::ModelLoad load;
    bool complete = true;
    for (const placement::LayerSpec& spec : t.model.layers) {
      if (!std::getline(in, line)) {
        complete = false;
        break;
      }
      placement::LoadMatrix mat(devices, spec.num_experts);
      std::istringstream values(line);
      int64_t v;
      int64_t n = 0;
      while (values >> v) {
        if (n < static_cast<int64_t>(devices) * spec.num_experts) {
          mat.at(static_cast<int>(n / spec.num_experts), static_cast<int>(n % spec.num_experts)) =
              v;
        }
        ++n;
      }
      if (n != static_cast<int64_t>(devices) * spec.num_experts) {
        if (in.peek() == EOF) {
          complete = false;
          break;
        }
        return absl::InvalidArgumentError(absl::StrCat(path, ": iteration ", iteration, " has ", n,
                                                       " counts in a layer, expected ",
                                                       devices * spec.num_experts));
      }
      load.push_back(std::move(mat));
    }
    if (!complete) break;  // a truncated last record
    t.iterations.push_back(iteration);
    t.loads.push_back(std::move(load));
  }
  return t;
}

}  // namespace hecate::wire
