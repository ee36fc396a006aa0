// Command-line parsing shared by every Hecate binary: abseil flags whose --help lists the flags
// defined in the binary's *_main.cc (not abseil's internals), plus --version.
#ifndef HECATE_COMMON_FLAGS_H_
#define HECATE_COMMON_FLAGS_H_

#include <string>
#include <vector>

namespace hecate {

inline constexpr char kVersion[] = "0.1.0";

// Parses argv; exits 0 after printing --help/--version, exits 2 on an unknown flag or a value that
// does not parse as the flag's type. Returns the positional arguments (argv[0] excluded).
std::vector<std::string> ParseFlags(int argc, char** argv, const std::string& usage);

}  // namespace hecate

#endif  // HECATE_COMMON_FLAGS_H_
