// Client credentials for the controller's gRPC port, shared by every client (worker agent,
// hecatectl, the hecate launcher's children): TLS with a CA bundle, optionally a client
// certificate (mTLS), optionally a bearer token. Flags win; empty ones are taken from
// HECATE_TLS_CA_FILE, HECATE_TLS_CERT_FILE, HECATE_TLS_KEY_FILE and HECATE_TOKEN_FILE.
#ifndef HECATE_COMMON_GRPC_CREDENTIALS_H_
#define HECATE_COMMON_GRPC_CREDENTIALS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class ChannelCredentials;
}  // namespace grpc

namespace hecate {

struct ClientTls {
  std::string ca_file;     // CA bundle (PEM) the controller's certificate must chain to
  std::string cert_file;   // this client's certificate chain (PEM), for mTLS
  std::string key_file;    // its private key (PEM)
  std::string token_file;  // a file holding the bearer token (trailing whitespace ignored)

  bool empty() const {
    return ca_file.empty() && cert_file.empty() && key_file.empty() && token_file.empty();
  }
};

// `flags` with every empty field taken from its environment variable.
ClientTls WithEnvironment(ClientTls flags);

// Insecure when nothing is set; else TLS (plus the token as call credentials).
// INVALID_ARGUMENT: a certificate without its key (or the reverse), a token without TLS;
// NOT_FOUND: a file that cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const ClientTls& tls);

}  // namespace hecate

#endif  // HECATE_COMMON_GRPC_CREDENTIALS_H_
