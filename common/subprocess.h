// Runs a binary as a child process (launcher and tests), reads its stdout line by line (blocking,
// with a deadline), and kills it. Synchronization is by what the child prints, never by sleeping.
#ifndef HECATE_COMMON_SUBPROCESS_H_
#define HECATE_COMMON_SUBPROCESS_H_

#include <signal.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace hecate::proc {

class Subprocess {
 public:
  Subprocess() = default;
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // Starts `argv[0]` with `argv`; extra environment entries "K=V" are added. stdout is piped to
  // us; stderr goes to `stderr_path` (appended) when given, else inherited. The child gets SIGTERM
  // when the thread that started it dies, whatever kills it (Linux PR_SET_PDEATHSIG): a launcher
  // killed with SIGKILL leaves no orphans.
  bool Start(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
             const std::string& stderr_path = "");
  // Reads stdout until a line starting with `prefix` arrives (returns the rest of that line),
  // EOF, or the deadline passes (returns false).
  bool WaitForLine(const std::string& prefix, absl::Duration timeout, std::string* rest);
  // Reads every remaining stdout line until EOF or the deadline.
  std::vector<std::string> ReadLines(absl::Duration timeout);
  // Reads the next stdout line (without its newline) as soon as it is complete; false at EOF or
  // when the deadline passes first.
  bool ReadLine(absl::Time deadline, std::string* line);
  void Signal(int sig);
  // Waits for exit; returns the exit code, 128 + signal, or -1 on timeout.
  int Wait(absl::Duration timeout);
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buffer_;
};

// Path of a data dependency in the test's runfiles ("controller/hecate-controller").
std::string Runfile(const std::string& path);
// A fresh directory under TEST_TMPDIR.
std::string TempDir(const std::string& name);
// A loopback TCP port that was free a moment ago (bind to port 0, read it back, close). For the
// rendezvous ports a group of processes must know before any of them listens (MASTER_PORT, a
// controller restarted on the same address); a server that can report its own port should bind
// port 0 instead.
int FreePort();

}  // namespace hecate::proc

#endif  // HECATE_COMMON_SUBPROCESS_H_
