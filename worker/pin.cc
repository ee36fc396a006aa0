#include "worker/pin.h"

#include <dirent.h>
#include <sched.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace hecate::worker {

absl::Status PinProcess(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE)
    return absl::InvalidArgumentError(absl::StrCat("no CPU ", cpu));
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  DIR* tasks = opendir("/proc/self/task");
  if (tasks == nullptr) return absl::UnavailableError("cannot list /proc/self/task");
  absl::Status status;
  while (dirent* entry = readdir(tasks)) {
    int tid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &tid)) continue;
    if (sched_setaffinity(tid, sizeof(set), &set) != 0) {
      status = absl::InvalidArgumentError(
          absl::StrCat("cannot pin thread ", tid, " to CPU ", cpu, ": ", std::strerror(errno)));
    }
  }
  closedir(tasks);
  return status;
}

}  // namespace hecate::worker
