#include "common/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace hecate {
namespace {

LogLevel InitialLevel() {
  const char* env = std::getenv("HECATE_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kInfo;
  if (std::strcmp(env, "debug") == 0) return LogLevel::kDebug;
  if (std::strcmp(env, "warn") == 0) return LogLevel::kWarn;
  if (std::strcmp(env, "error") == 0) return LogLevel::kError;
  return LogLevel::kInfo;
}

LogLevel g_level = InitialLevel();
std::string* g_component = new std::string();
std::mutex g_mu;

const char* Name(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

std::string Quote(const std::string& v) {
  if (!v.empty() && v.find_first_of(" \"=\t\n") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level = level; }

void SetLogComponent(std::string component) {
  std::lock_guard<std::mutex> lock(g_mu);
  *g_component = std::move(component);
}

void Log(LogLevel level, const std::string& msg, const LogFields& fields) {
  if (level < g_level) return;
  std::string line = absl::StrCat(
      "ts=", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
      " level=", Name(level));
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!g_component->empty()) absl::StrAppend(&line, " component=", *g_component);
  }
  absl::StrAppend(&line, " msg=", Quote(msg));
  for (const auto& [k, v] : fields.fields()) absl::StrAppend(&line, " ", k, "=", Quote(v));
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace hecate
