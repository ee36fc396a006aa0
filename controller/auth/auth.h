// Authentication and authorization of the controller's RPCs (docs/operations.md "Security").
//
// Two roles: a *worker* may register, report loads, watch plans and read a plan; an *operator*
// may do everything (queries, policy, freeze, rollback). A caller's role comes from a bearer token
// (`--tokens_file`: one `ROLE SHA256HEX` per line, the hex SHA-256 of the token; tokens are never
// stored or logged in the clear) or from the common name of its verified client certificate
// (`--tls_client_roles_file`: one `ROLE COMMON_NAME` per line). With a client CA but no roles
// file, every verified client certificate is an operator. With none of these every caller is an
// operator (the controller then only listens on loopback unless --insecure).
//
// Worker secrets: RegisterWorker issues each incarnation a random secret (NewSecret) and keeps
// its digest (Sha256); reports and watches must carry the secret (the service compares digests
// with DigestsEqual, in constant time).
#ifndef HECATE_CONTROLLER_AUTH_AUTH_H_
#define HECATE_CONTROLLER_AUTH_AUTH_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hecate::controller {

enum class Role { kWorker, kOperator };
const char* RoleName(Role r);

// The RPCs, for the role table.
enum class Method {
  kRegisterWorker,
  kReportLoad,
  kWatchPlans,
  kGetPlan,
  kListWorkers,
  kGetLoad,
  kGetStatus,
  kFreeze,
  kUnfreeze,
  kSetPolicy,
  kRollbackPlan,
};
const char* MethodName(Method m);
// The least role that may call `m`.
Role RequiredRole(Method m);

// Why a call was refused (the `reason` label of hecate_auth_failures_total).
enum class AuthFailure { kNoCredential, kBadToken, kUnknownCertificate, kWrongRole, kBadSecret };
const char* AuthFailureName(AuthFailure f);

// What a call carried.
struct CallCredentials {
  std::string bearer_token;             // from `authorization: Bearer ...` (empty: none)
  std::vector<std::string> peer_names;  // common names of the verified client certificate
};

class Authenticator {
 public:
  // No tokens and no certificate roles: every caller is an operator.
  Authenticator() = default;
  // Reads --tokens_file and --tls_client_roles_file (either may be empty). INVALID_ARGUMENT names
  // the file and line of a malformed entry; NOT_FOUND for a missing file. `client_ca`: client
  // certificates are verified, and with no roles file every verified one is an operator.
  static absl::StatusOr<Authenticator> FromFiles(const std::string& tokens_file,
                                                 const std::string& client_roles_file,
                                                 bool client_ca = false);
  // From already parsed entries: token digests (raw 32 bytes) and certificate names.
  Authenticator(std::map<std::string, Role> token_sha256, std::map<std::string, Role> names);

  bool enabled() const { return !tokens_.empty() || !names_.empty() || any_certificate_; }
  // The caller's role, or UNAUTHENTICATED (no credential, an unknown token or certificate).
  // `failure` says why when it fails.
  absl::StatusOr<Role> Authenticate(const CallCredentials& c, AuthFailure* failure) const;
  // Authenticate, then PERMISSION_DENIED when the role may not call `m`.
  absl::StatusOr<Role> Authorize(const CallCredentials& c, Method m, AuthFailure* failure) const;

 private:
  std::map<std::string, Role> tokens_;  // SHA-256 (raw) -> role
  std::map<std::string, Role> names_;   // certificate common name -> role
  bool any_certificate_ = false;        // every verified client certificate is an operator
};

// SHA-256 of `data`, raw 32 bytes.
std::string Sha256(absl::string_view data);
// Lower-case hex of `bytes`.
std::string Hex(absl::string_view bytes);
// 32 random bytes (OpenSSL's RAND_bytes) as 64 hex characters.
std::string NewSecret();
// Equal digests, compared in time independent of their contents (CRYPTO_memcmp).
bool DigestsEqual(absl::string_view a, absl::string_view b);

}  // namespace hecate::controller

#endif  // HECATE_CONTROLLER_AUTH_AUTH_H_
