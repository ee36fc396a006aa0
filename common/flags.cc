#include "common/flags.h"

#include <algorithm>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"

namespace hecate {

std::vector<std::string> ParseFlags(int argc, char** argv, const std::string& usage) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "_main.cc") || absl::StrContains(file, "common/");
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  config.version_string = [] { return std::string("hecate ") + kVersion + "\n"; };
  config.normalize_filename = [](absl::string_view f) { return std::string(f); };
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage);
  // Accept --state-dir as well as --state_dir: dashes in a flag's name become underscores.
  static std::vector<std::string> storage;
  storage.assign(argv, argv + argc);
  std::vector<char*> args;
  bool positional_only = false;
  for (std::string& a : storage) {
    if (a == "--") positional_only = true;
    if (!positional_only && a.size() > 2 && a[0] == '-') {
      const size_t start = a[1] == '-' ? 2 : 1;
      const size_t end = std::min(a.find('='), a.size());
      for (size_t i = start; i < end; ++i) {
        if (a[i] == '-') a[i] = '_';
      }
    }
    args.push_back(a.data());
  }
  std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  // Debian's abseil is built without NDEBUG, so every absl::Mutex lock -- ours and gRPC's -- runs
  // the deadlock detector (a global graph under a spinlock). That is a debugging aid; production
  // binaries turn it off (tests keep it).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return std::vector<std::string>(rest.begin() + 1, rest.end());
}

}  // namespace hecate
