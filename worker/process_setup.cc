#include "worker/process_setup.h"

#include <dirent.h>
#include <malloc.h>
#include <sched.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace hecate::worker {

absl::Status KeepFreedMemory() {
  if (mallopt(M_MMAP_THRESHOLD, 32 << 20) != 1 || mallopt(M_TRIM_THRESHOLD, 1 << 30) != 1 ||
      mallopt(M_TOP_PAD, 64 << 20) != 1) {
    return absl::InternalError("malloc refused a setting");
  }
  return absl::OkStatus();
}

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
