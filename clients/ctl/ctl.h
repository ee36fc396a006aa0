// hecatectl: the operator CLI for the Hecate controller.
//
//   hecatectl [global flags] COMMAND [ARGS] [flags]
//
// Global flags: --controller=HOST:PORT (env HECATE_CONTROLLER, default 127.0.0.1:7450),
// -o/--output table|json|yaml, --job=ID (default: the only job), --timeout=SECONDS (10).
//
// TLS: --tls_ca_file, --tls_cert_file, --tls_key_file, --token_file (or HECATE_TLS_CA_FILE,
// HECATE_TLS_CERT_FILE, HECATE_TLS_KEY_FILE, HECATE_TOKEN_FILE).
//
// Exit codes: 0 ok; 1 other error; 2 usage error; 3 controller unavailable; 4 not found;
// 5 rejected (invalid argument / failed precondition); 6 refused (unauthenticated / permission
// denied).
#ifndef HECATE_CLIENTS_CTL_CTL_H_
#define HECATE_CLIENTS_CTL_CTL_H_

#include <ostream>
#include <string>
#include <vector>

namespace hecate::ctl {

enum ExitCode {
  kOk = 0,
  kError = 1,
  kUsage = 2,
  kUnavailable = 3,
  kNotFound = 4,
  kRejected = 5,
  kDenied = 6,  // UNAUTHENTICATED or PERMISSION_DENIED
};

// Runs one hecatectl invocation (args exclude the program name). Data goes to `out`, messages to
// `err`. `env_controller` is HECATE_CONTROLLER's value (empty if unset).
int Run(const std::vector<std::string>& args, const std::string& env_controller, std::ostream& out,
        std::ostream& err);

std::string Usage();

}  // namespace hecate::ctl

#endif  // HECATE_CLIENTS_CTL_CTL_H_
