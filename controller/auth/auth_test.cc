#include "controller/auth/auth.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

namespace hecate::controller {
namespace {

std::string TempFile(const std::string& name, const std::string& text) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(AuthTest, Sha256KnownAnswer) {
  EXPECT_EQ(Hex(Sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(NewSecret().size(), 64u);
  EXPECT_NE(NewSecret(), NewSecret());
}

TEST(AuthTest, OpenWithoutCredentialsConfigured) {
  Authenticator open;
  AuthFailure why{};
  absl::StatusOr<Role> r = open.Authorize({}, Method::kSetPolicy, &why);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, Role::kOperator);
}

TEST(AuthTest, TokensAndCertificateNamesGiveRoles) {
  const std::string tokens =
      TempFile("tokens", "# role digest\noperator " + Hex(Sha256("op-token")) + "\nworker " +
                             Hex(Sha256("worker-token")) + "\n\n");
  const std::string names = TempFile("names", "worker worker-0\noperator alice\n");
  absl::StatusOr<Authenticator> a = Authenticator::FromFiles(tokens, names);
  ASSERT_TRUE(a.ok()) << a.status();
  AuthFailure why{};
  EXPECT_EQ(*a->Authorize({"op-token", {}}, Method::kSetPolicy, &why), Role::kOperator);
  EXPECT_EQ(*a->Authorize({"worker-token", {}}, Method::kReportLoad, &why), Role::kWorker);
  EXPECT_EQ(*a->Authorize({"", {"worker-0"}}, Method::kWatchPlans, &why), Role::kWorker);
  EXPECT_EQ(*a->Authorize({"", {"alice"}}, Method::kRollbackPlan, &why), Role::kOperator);

  absl::StatusOr<Role> r = a->Authorize({"worker-token", {}}, Method::kSetPolicy, &why);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(why, AuthFailure::kWrongRole);
  r = a->Authorize({"nope", {}}, Method::kGetPlan, &why);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(why, AuthFailure::kBadToken);
  EXPECT_EQ(r.status().message().find("nope"), std::string::npos) << "a token is never echoed";
  r = a->Authorize({}, Method::kGetPlan, &why);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(why, AuthFailure::kNoCredential);
  r = a->Authorize({"", {"mallory"}}, Method::kGetPlan, &why);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(why, AuthFailure::kUnknownCertificate);
}

TEST(AuthTest, MalformedFilesNameTheLine) {
  absl::StatusOr<Authenticator> a =
      Authenticator::FromFiles(TempFile("bad_role", "admin " + Hex(Sha256("x")) + "\n"), "");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find(":1:"), std::string::npos) << a.status();
  a = Authenticator::FromFiles(TempFile("bad_digest", "operator not-hex\n"), "");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  a = Authenticator::FromFiles("/nonexistent/tokens", "");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kNotFound);
}

TEST(AuthTest, RoleTable) {
  for (Method m :
       {Method::kRegisterWorker, Method::kReportLoad, Method::kWatchPlans, Method::kGetPlan}) {
    EXPECT_EQ(RequiredRole(m), Role::kWorker) << MethodName(m);
  }
  for (Method m : {Method::kListWorkers, Method::kGetLoad, Method::kGetStatus, Method::kFreeze,
                   Method::kUnfreeze, Method::kSetPolicy, Method::kRollbackPlan}) {
    EXPECT_EQ(RequiredRole(m), Role::kOperator) << MethodName(m);
  }
}

}  // namespace
}  // namespace hecate::controller
