#include "common/flags.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/internal/parse.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"

namespace hecate {
namespace {

bool IsUsageFlag(absl::string_view name) {
  for (absl::string_view u :
       {"help", "helpfull", "helpshort", "helppackage", "helpmatch", "helpon", "version",
        "only_check_flags", "flagfile", "fromenv", "tryfromenv", "undefok"}) {
    if (name == u) return true;
  }
  return false;
}

// Checks every flag on the command line before abseil parses it, so that an unknown flag or a
// malformed value is a usage error (exit 2; abseil itself exits 1, as it does after --help).
void CheckFlagsOrExit(const std::vector<char*>& args) {
  for (size_t i = 1; i < args.size(); ++i) {
    absl::string_view a = args[i];
    if (a == "--") return;
    if (a.size() < 2 || a[0] != '-') continue;
    a.remove_prefix(a[1] == '-' ? 2 : 1);
    const size_t eq = a.find('=');
    const absl::string_view name = a.substr(0, eq);
    if (IsUsageFlag(name)) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) {
      absl::CommandLineFlag* negated =
          absl::StartsWith(name, "no") ? absl::FindCommandLineFlag(name.substr(2)) : nullptr;
      if (negated != nullptr && negated->IsOfType<bool>() && eq == absl::string_view::npos) {
        continue;
      }
      std::fprintf(stderr, "%s: unknown flag --%.*s (--help lists the flags)\n", args[0],
                   static_cast<int>(name.size()), name.data());
      std::exit(2);
    }
    std::string value;
    if (eq != absl::string_view::npos) {
      value = std::string(a.substr(eq + 1));
    } else if (flag->IsOfType<bool>()) {
      continue;
    } else if (i + 1 < args.size()) {
      value = args[++i];  // "--flag value"
    } else {
      std::fprintf(stderr, "%s: --%.*s needs a value\n", args[0], static_cast<int>(name.size()),
                   name.data());
      std::exit(2);
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      std::fprintf(stderr, "%s: bad value for --%.*s: %s\n", args[0], static_cast<int>(name.size()),
                   name.data(), error.c_str());
      std::exit(2);
    }
  }
}

}  // namespace

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
  CheckFlagsOrExit(args);
  std::vector<char*> rest = absl::flags_internal::ParseCommandLineImpl(
      static_cast<int>(args.size()), args.data(),
      absl::flags_internal::ArgvListAction::kRemoveParsedArgs,
      absl::flags_internal::UsageFlagsAction::kIgnoreUsage,
      absl::flags_internal::OnUndefinedFlag::kAbortIfUndefined);
  // --help and friends print and exit 0 (abseil would exit 1 after --help).
  if (absl::flags_internal::HandleUsageFlags(std::cout, absl::ProgramUsageMessage()) >= 0) {
    std::cout.flush();
    std::exit(0);
  }
  // Debian's abseil is built without NDEBUG, so every absl::Mutex lock -- ours and gRPC's -- runs
  // the deadlock detector (a global graph under a spinlock). That is a debugging aid; production
  // binaries turn it off (tests keep it).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return std::vector<std::string>(rest.begin() + 1, rest.end());
}

}  // namespace hecate
