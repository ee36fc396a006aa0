// Structured logs: one line per event, logfmt ("ts=... level=info msg=\"...\" key=value") on
// stderr. Thread-safe (one write per line). Use for operator-facing events, never in hot loops.
#ifndef HECATE_COMMON_LOG_H_
#define HECATE_COMMON_LOG_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace hecate {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// Lines below this level are dropped (default kInfo; HECATE_LOG_LEVEL=debug|info|warn|error).
void SetLogLevel(LogLevel level);
// A component name prefixed to every line of this process ("controller", "worker").
void SetLogComponent(std::string component);

// Key-value pairs of one line; values are quoted when they contain spaces or quotes.
class LogFields {
 public:
  template <typename T>
  LogFields& operator()(const char* key, const T& value) {
    fields_.emplace_back(key, absl::StrCat(value));
    return *this;
  }
  const std::vector<std::pair<std::string, std::string>>& fields() const { return fields_; }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

void Log(LogLevel level, const std::string& msg, const LogFields& fields = LogFields());

inline void LogInfo(const std::string& msg, const LogFields& f = LogFields()) {
  Log(LogLevel::kInfo, msg, f);
}
inline void LogWarn(const std::string& msg, const LogFields& f = LogFields()) {
  Log(LogLevel::kWarn, msg, f);
}
inline void LogError(const std::string& msg, const LogFields& f = LogFields()) {
  Log(LogLevel::kError, msg, f);
}
inline void LogDebug(const std::string& msg, const LogFields& f = LogFields()) {
  Log(LogLevel::kDebug, msg, f);
}

}  // namespace hecate

#endif  // HECATE_COMMON_LOG_H_
