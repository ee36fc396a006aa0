#include "common/grpc_credentials.h"

#include <grpcpp/security/credentials.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace hecate {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

ClientTls WithEnvironment(ClientTls flags) {
  if (flags.ca_file.empty()) flags.ca_file = Env("HECATE_TLS_CA_FILE");
  if (flags.cert_file.empty()) flags.cert_file = Env("HECATE_TLS_CERT_FILE");
  if (flags.key_file.empty()) flags.key_file = Env("HECATE_TLS_KEY_FILE");
  if (flags.token_file.empty()) flags.token_file = Env("HECATE_TOKEN_FILE");
  return flags;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const ClientTls& tls) {
  if (tls.empty()) return grpc::InsecureChannelCredentials();
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file go together");
  }
  if (tls.ca_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs --tls_ca_file (HECATE_TLS_CA_FILE): a client certificate or a token is never "
        "sent without it");
  }
  grpc::SslCredentialsOptions options;
  absl::StatusOr<std::string> ca = ReadFile(tls.ca_file);
  if (!ca.ok()) return ca.status();
  options.pem_root_certs = *ca;
  if (!tls.cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadFile(tls.cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile(tls.key_file);
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *cert;
    options.pem_private_key = *key;
  }
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::SslCredentials(options);
  if (!tls.token_file.empty()) {
    absl::StatusOr<std::string> token = ReadFile(tls.token_file);
    if (!token.ok()) return token.status();
    const std::string t(absl::StripTrailingAsciiWhitespace(*token));
    if (t.empty()) return absl::InvalidArgumentError(absl::StrCat(tls.token_file, " is empty"));
    creds = grpc::CompositeChannelCredentials(creds, grpc::AccessTokenCredentials(t));
  }
  return creds;
}

}  // namespace hecate
