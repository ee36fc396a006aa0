#include "controller/auth/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <fstream>

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace hecate::controller {

const char* RoleName(Role r) { return r == Role::kOperator ? "operator" : "worker"; }

const char* MethodName(Method m) {
  switch (m) {
    case Method::kRegisterWorker:
      return "RegisterWorker";
    case Method::kReportLoad:
      return "ReportLoad";
    case Method::kWatchPlans:
      return "WatchPlans";
    case Method::kGetPlan:
      return "GetPlan";
    case Method::kListWorkers:
      return "ListWorkers";
    case Method::kGetLoad:
      return "GetLoad";
    case Method::kGetStatus:
      return "GetStatus";
    case Method::kFreeze:
      return "Freeze";
    case Method::kUnfreeze:
      return "Unfreeze";
    case Method::kSetPolicy:
      return "SetPolicy";
    case Method::kRollbackPlan:
      return "RollbackPlan";
  }
  return "?";
}

Role RequiredRole(Method m) {
  switch (m) {
    case Method::kRegisterWorker:
    case Method::kReportLoad:
    case Method::kWatchPlans:
    case Method::kGetPlan:
      return Role::kWorker;
    default:
      return Role::kOperator;
  }
}

const char* AuthFailureName(AuthFailure f) {
  switch (f) {
    case AuthFailure::kNoCredential:
      return "no_credential";
    case AuthFailure::kBadToken:
      return "bad_token";
    case AuthFailure::kUnknownCertificate:
      return "unknown_certificate";
    case AuthFailure::kWrongRole:
      return "wrong_role";
    case AuthFailure::kBadSecret:
      return "bad_secret";
  }
  return "?";
}

namespace {

absl::StatusOr<Role> ParseRole(absl::string_view s) {
  if (s == "operator") return Role::kOperator;
  if (s == "worker") return Role::kWorker;
  return absl::InvalidArgumentError(absl::StrCat("unknown role '", s, "' (operator or worker)"));
}

// Lines of `path` as (ROLE, VALUE); blank lines and '#' comments skipped.
absl::StatusOr<std::vector<std::pair<Role, std::string>>> ReadRoleFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::vector<std::pair<Role, std::string>> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty() || l[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(l, absl::MaxSplits(' ', 1), absl::SkipEmpty());
    if (f.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", n, ": expected 'ROLE VALUE' (ROLE operator or worker)"));
    }
    absl::StatusOr<Role> role = ParseRole(f[0]);
    if (!role.ok())
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": ", role.status().message()));
    out.emplace_back(*role, std::string(absl::StripAsciiWhitespace(f[1])));
  }
  return out;
}

}  // namespace

Authenticator::Authenticator(std::map<std::string, Role> token_sha256,
                             std::map<std::string, Role> names)
    : tokens_(std::move(token_sha256)), names_(std::move(names)) {}

absl::StatusOr<Authenticator> Authenticator::FromFiles(const std::string& tokens_file,
                                                       const std::string& client_roles_file,
                                                       bool client_ca) {
  std::map<std::string, Role> tokens, names;
  if (!tokens_file.empty()) {
    absl::StatusOr<std::vector<std::pair<Role, std::string>>> entries = ReadRoleFile(tokens_file);
    if (!entries.ok()) return entries.status();
    for (const auto& [role, hex] : *entries) {
      std::string raw;
      if (hex.size() != 64 || !absl::c_all_of(hex, absl::ascii_isxdigit)) {
        return absl::InvalidArgumentError(absl::StrCat(
            tokens_file, ": a token digest must be 64 hex digits (sha256sum of the token)"));
      }
      raw = absl::HexStringToBytes(absl::AsciiStrToLower(hex));
      tokens[raw] = role;
    }
  }
  if (!client_roles_file.empty()) {
    absl::StatusOr<std::vector<std::pair<Role, std::string>>> entries =
        ReadRoleFile(client_roles_file);
    if (!entries.ok()) return entries.status();
    for (const auto& [role, name] : *entries) names[name] = role;
  }
  Authenticator a(std::move(tokens), std::move(names));
  a.any_certificate_ = client_ca && client_roles_file.empty();
  return a;
}

absl::StatusOr<Role> Authenticator::Authenticate(const CallCredentials& c,
                                                 AuthFailure* failure) const {
  if (!enabled()) return Role::kOperator;
  if (!c.bearer_token.empty()) {
    const std::string digest = Sha256(c.bearer_token);
    // Every entry is compared, so the time taken does not say which one matched.
    const Role* found = nullptr;
    for (const auto& [d, role] : tokens_) {
      if (DigestsEqual(d, digest)) found = &role;
    }
    if (found != nullptr) return *found;
    *failure = AuthFailure::kBadToken;
    return absl::UnauthenticatedError("unknown bearer token");
  }
  if (any_certificate_ && !c.peer_names.empty()) return Role::kOperator;
  for (const std::string& name : c.peer_names) {
    if (auto it = names_.find(name); it != names_.end()) return it->second;
  }
  if (!c.peer_names.empty()) {
    *failure = AuthFailure::kUnknownCertificate;
    return absl::UnauthenticatedError(
        absl::StrCat("client certificate '", c.peer_names.front(), "' has no role"));
  }
  *failure = AuthFailure::kNoCredential;
  return absl::UnauthenticatedError("no credential: a bearer token or a client certificate");
}

absl::StatusOr<Role> Authenticator::Authorize(const CallCredentials& c, Method m,
                                              AuthFailure* failure) const {
  absl::StatusOr<Role> role = Authenticate(c, failure);
  if (!role.ok()) return role;
  if (*role == Role::kWorker && RequiredRole(m) == Role::kOperator) {
    *failure = AuthFailure::kWrongRole;
    return absl::PermissionDeniedError(
        absl::StrCat(MethodName(m), " needs the operator role; the caller is a worker"));
  }
  return role;
}

std::string Sha256(absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string Hex(absl::string_view bytes) { return absl::BytesToHexString(bytes); }

std::string NewSecret() {
  unsigned char buf[32];
  if (RAND_bytes(buf, sizeof buf) != 1) std::abort();  // no entropy: nothing safe to hand out
  return Hex(absl::string_view(reinterpret_cast<const char*>(buf), sizeof buf));
}

bool DigestsEqual(absl::string_view a, absl::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace hecate::controller
