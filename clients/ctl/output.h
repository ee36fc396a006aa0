// Output formats of hecatectl: proto3 canonical JSON (what grpcurl prints), YAML (the same
// structure), and aligned text tables.
#ifndef HECATE_CLIENTS_CTL_OUTPUT_H_
#define HECATE_CLIENTS_CTL_OUTPUT_H_

#include <string>
#include <vector>

#include "google/protobuf/message.h"

namespace hecate::ctl {

enum class Format { kTable, kJson, kYaml };

// Parses "table", "json", "yaml"; false otherwise.
bool ParseFormat(const std::string& s, Format* out);

// YAML rendering of a message (field names in lowerCamelCase as in proto3 JSON; 64-bit integers
// as numbers; enums by name; default-valued scalars omitted like JSON).
std::string ToYaml(const google::protobuf::Message& m);

// A text table with a header row; columns padded to their widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace hecate::ctl

#endif  // HECATE_CLIENTS_CTL_OUTPUT_H_
