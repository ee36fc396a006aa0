#include "clients/ctl/output.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"

namespace hecate::ctl {

namespace pb = google::protobuf;

bool ParseFormat(const std::string& s, Format* out) {
  if (s == "table" || s == "wide") {
    *out = Format::kTable;
  } else if (s == "json") {
    *out = Format::kJson;
  } else if (s == "yaml") {
    *out = Format::kYaml;
  } else {
    return false;
  }
  return true;
}

namespace {

std::string Scalar(const pb::Message& m, const pb::FieldDescriptor* f, int index) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return absl::StrCat(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return absl::StrCat(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return absl::StrCat(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return (rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false";
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return (rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f))->name();
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      const std::string v = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      std::string out = "\"";
      for (char c : v) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
      }
      return out + "\"";
    }
    default:
      return "?";
  }
}

void Emit(const pb::Message& m, int indent, std::string* out) {
  const pb::Reflection* r = m.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  const std::string pad(indent, ' ');
  for (const pb::FieldDescriptor* f : fields) {
    const std::string key = f->json_name();
    if (f->is_repeated()) {
      const int n = r->FieldSize(m, f);
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
        absl::StrAppend(out, pad, key, ":\n");
        for (int i = 0; i < n; ++i) {
          std::string item;
          Emit(r->GetRepeatedMessage(m, f, i), indent + 2, &item);
          if (item.empty()) {
            absl::StrAppend(out, pad, "- {}\n");
            continue;
          }
          // "- " replaces the first line's indentation.
          item.replace(indent, 2, "- ");
          absl::StrAppend(out, item);
        }
      } else {
        absl::StrAppend(out, pad, key, ": [");
        for (int i = 0; i < n; ++i) absl::StrAppend(out, i ? ", " : "", Scalar(m, f, i));
        absl::StrAppend(out, "]\n");
      }
    } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      std::string inner;
      Emit(r->GetMessage(m, f), indent + 2, &inner);
      absl::StrAppend(out, pad, key, ":", inner.empty() ? " {}\n" : "\n", inner);
    } else {
      absl::StrAppend(out, pad, key, ": ", Scalar(m, f, 0), "\n");
    }
  }
}

}  // namespace

std::string ToYaml(const pb::Message& m) {
  std::string out;
  Emit(m, 0, &out);
  return out.empty() ? "{}\n" : out;
}

std::string Table::Render() const {
  std::vector<size_t> width;
  for (const auto& row : rows_) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

}  // namespace hecate::ctl
