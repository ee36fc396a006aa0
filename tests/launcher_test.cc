// `hecate run` as an operator meets it: progress rows arrive while the job runs (not all at once
// when rank 0 exits), Ctrl-C prints the rows so far and a summary, a launcher killed with SIGKILL
// leaves no controller or worker behind, and bad flags are usage errors (exit 2; --help exits 0).
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/subprocess.h"

namespace hecate {
namespace {

using proc::Runfile;
using proc::Subprocess;
using proc::TempDir;

const std::vector<std::string> kSmallModel = {"--layers=2",   "--d_model=32", "--heads=2",
                                              "--experts=4",  "--d_ffn=64",   "--batch=4",
                                              "--seq_len=16", "--threads=1"};

std::vector<std::string> Launcher(const std::string& dir, int iterations) {
  std::vector<std::string> argv = {Runfile("clients/hecate"),
                                   "run",
                                   "--workers=2",
                                   absl::StrCat("--iterations=", iterations),
                                   "--log_every=1",
                                   "--state_dir=" + dir + "/state",
                                   "--"};
  argv.insert(argv.end(), kSmallModel.begin(), kSmallModel.end());
  return argv;
}

// Processes whose parent is `pid` (from /proc/*/stat).
std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (d == nullptr) return out;
  for (dirent* e; (e = readdir(d)) != nullptr;) {
    int child = 0;
    if (!absl::SimpleAtoi(e->d_name, &child)) continue;
    std::ifstream in(absl::StrCat("/proc/", child, "/stat"));
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(close_paren + 2));
    char state;
    int ppid = 0;
    rest >> state >> ppid;
    if (ppid == pid) out.push_back(child);
  }
  closedir(d);
  return out;
}

// Waits (blocking on a pidfd, bounded) until `pid` has exited; false if it still runs.
bool ExitsWithin(pid_t pid, absl::Duration timeout) {
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;  // already gone
  pollfd p{fd, POLLIN, 0};
  const int r = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  close(fd);
  return r == 1;
}

TEST(LauncherTest, ProgressRowsArriveWhileTheJobRunsAndCtrlCSummarizes) {
  const std::string dir = TempDir("launcher_live");
  Subprocess run;
  ASSERT_TRUE(run.Start(Launcher(dir, 100000), {}, dir + "/run.err"));
  // Rows come as iterations finish: two of them while rank 0 still has ~100k iterations to go.
  std::string line;
  int rows = 0;
  const absl::Time deadline = absl::Now() + absl::Minutes(3);
  while (rows < 2 && run.ReadLine(deadline, &line)) {
    std::istringstream cols(line);
    int iter = -1;
    double loss = 0;
    if (cols >> iter >> loss) ++rows;
    EXPECT_EQ(line.find("summary:"), std::string::npos) << "the job cannot have finished";
  }
  ASSERT_EQ(rows, 2) << "see " << dir;
  // Ctrl-C: the launcher stops the job, prints a summary of the rows so far and exits 130.
  run.Signal(SIGINT);
  std::vector<std::string> rest = run.ReadLines(absl::Minutes(2));
  EXPECT_EQ(run.Wait(absl::Seconds(60)), 130);
  std::string all;
  for (const std::string& l : rest) all += l + "\n";
  EXPECT_THAT(all, ::testing::HasSubstr("summary (interrupted):"));
}

TEST(LauncherTest, KilledLauncherLeavesNoChildren) {
  const std::string dir = TempDir("launcher_kill");
  Subprocess run;
  ASSERT_TRUE(run.Start(Launcher(dir, 100000), {}, dir + "/run.err"));
  std::string line;
  const absl::Time deadline = absl::Now() + absl::Minutes(3);
  bool started = false;
  while (!started && run.ReadLine(deadline, &line)) {
    std::istringstream cols(line);
    int iter = -1;
    double loss = 0;
    started = static_cast<bool>(cols >> iter >> loss);
  }
  ASSERT_TRUE(started) << "see " << dir;
  const std::vector<pid_t> children = ChildrenOf(run.pid());
  ASSERT_EQ(children.size(), 3u) << "a controller and two workers";
  run.Signal(SIGKILL);
  EXPECT_EQ(run.Wait(absl::Seconds(30)), 128 + SIGKILL);
  for (pid_t child : children) {
    EXPECT_TRUE(ExitsWithin(child, absl::Seconds(60))) << "orphan " << child << "; see " << dir;
  }
}

TEST(LauncherTest, TrainsAgainstAnExternalController) {
  const std::string dir = TempDir("launcher_external");
  Subprocess controller;
  ASSERT_TRUE(controller.Start({Runfile("controller/hecate-controller"), "--listen=127.0.0.1:0",
                                "--metrics-listen=", "--state-dir=" + dir + "/controller"},
                               {}, dir + "/controller.log"));
  std::string address;
  ASSERT_TRUE(controller.WaitForLine("listening on ", absl::Seconds(30), &address));
  std::vector<std::string> argv = Launcher(dir, 300);
  argv.insert(argv.begin() + 2, "--controller=" + address);
  Subprocess run;
  ASSERT_TRUE(run.Start(argv, {}, dir + "/run.err"));
  std::vector<std::string> lines = run.ReadLines(absl::Minutes(3));
  ASSERT_EQ(run.Wait(absl::Seconds(60)), 0) << "see " << dir;
  std::string all;
  for (const std::string& l : lines) all += l + "\n";
  EXPECT_THAT(all, ::testing::HasSubstr(address + " (external)"));
  EXPECT_THAT(all, ::testing::HasSubstr("summary: 300 iterations"));
  EXPECT_THAT(all, ::testing::HasSubstr("[connected]")) << "the workers followed its plans";
  EXPECT_EQ(controller.Wait(absl::ZeroDuration()), -1) << "the launcher leaves it running";
}

// A job over mutual TLS with two identities: the workers (certificate CN worker-0, role worker)
// train to the end against a controller that requires client certificates; hecatectl with the
// operator's certificate reads its status, with the workers' it may not change the policy.
TEST(LauncherTest, TrainsOverMutualTlsWithOperatorAndWorkerIdentities) {
  const std::string dir = TempDir("launcher_mtls");
  ASSERT_EQ(
      std::system(
          ("bash '" + Runfile("tests/certs/make_test_certs.sh") + "' '" + dir + "/certs'").c_str()),
      0);
  const std::string certs = dir + "/certs";
  std::ofstream(dir + "/roles") << "worker worker-0\noperator operator\n";
  Subprocess controller;
  ASSERT_TRUE(controller.Start(
      {Runfile("controller/hecate-controller"), "--listen=127.0.0.1:0",
       "--metrics-listen=", "--state-dir=" + dir + "/controller",
       "--tls_cert_file=" + certs + "/server.crt", "--tls_key_file=" + certs + "/server.key",
       "--tls_client_ca_file=" + certs + "/ca.crt", "--tls_client_roles_file=" + dir + "/roles"},
      {}, dir + "/controller.log"));
  std::string address;
  ASSERT_TRUE(controller.WaitForLine("listening on ", absl::Seconds(30), &address));
  std::vector<std::string> argv = Launcher(dir, 300);
  argv.insert(argv.begin() + 2, {"--controller=" + address, "--tls_ca_file=" + certs + "/ca.crt",
                                 "--tls_cert_file=" + certs + "/worker-0.crt",
                                 "--tls_key_file=" + certs + "/worker-0.key"});
  Subprocess run;
  ASSERT_TRUE(run.Start(argv, {}, dir + "/run.err"));
  std::vector<std::string> lines = run.ReadLines(absl::Minutes(3));
  ASSERT_EQ(run.Wait(absl::Seconds(60)), 0) << "see " << dir;
  std::string all;
  for (const std::string& l : lines) all += l + "\n";
  EXPECT_THAT(all, ::testing::HasSubstr("summary: 300 iterations"));
  EXPECT_THAT(all, ::testing::HasSubstr("[connected]")) << "the workers followed its plans";

  auto ctl = [&](const std::string& who, std::vector<std::string> args, std::string* out) {
    std::vector<std::string> a = {Runfile("clients/hecatectl"), "--controller=" + address,
                                  "--tls_ca_file=" + certs + "/ca.crt",
                                  "--tls_cert_file=" + certs + "/" + who + ".crt",
                                  "--tls_key_file=" + certs + "/" + who + ".key"};
    a.insert(a.end(), args.begin(), args.end());
    Subprocess p;
    EXPECT_TRUE(p.Start(a, {}, dir + "/ctl.err"));
    out->clear();
    for (const std::string& l : p.ReadLines(absl::Seconds(60))) *out += l + "\n";
    return p.Wait(absl::Seconds(30));
  };
  std::string out;
  EXPECT_EQ(ctl("operator", {"status"}, &out), 0) << out;
  EXPECT_THAT(out, ::testing::HasSubstr("hecate-run"));
  EXPECT_EQ(ctl("worker-0", {"policy", "set", "ep"}, &out), 6) << "refused";
  std::ifstream err(dir + "/ctl.err");
  std::string text((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, ::testing::HasSubstr("PERMISSION_DENIED"));
}

TEST(LauncherTest, BadFlagsAreUsageErrors) {
  const std::string dir = TempDir("launcher_flags");
  for (const char* bad :
       {"--iterations=-1", "--workers=-2", "--log_every=0", "--master_port=70000", "--skew=-1",
        "--policy=nope", "--compare=nope", "--controller=nohost", "--tls_ca_file=x",
        "--iterations=abc", "--no_such_flag=1", "--checkpoint_every=5"}) {
    Subprocess run;
    ASSERT_TRUE(run.Start({Runfile("clients/hecate"), "run", bad}, {}, dir + "/err.log"));
    run.ReadLines(absl::Seconds(30));
    EXPECT_EQ(run.Wait(absl::Seconds(30)), 2) << bad;
  }
  Subprocess help;
  ASSERT_TRUE(help.Start({Runfile("clients/hecate"), "--help"}, {}, dir + "/help.log"));
  std::vector<std::string> lines = help.ReadLines(absl::Seconds(30));
  EXPECT_EQ(help.Wait(absl::Seconds(30)), 0);
  std::string all;
  for (const std::string& l : lines) all += l + "\n";
  EXPECT_THAT(all, ::testing::HasSubstr("--iterations"));
}

}  // namespace
}  // namespace hecate
