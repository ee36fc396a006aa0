#include "worker/process_setup.h"

#include <sched.h>

#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"

namespace hecate::worker {
namespace {

// glibc's chunk header, the word before the block: bit 1 marks a block served by its own mmap.
bool IsMmapped(void* block) { return (static_cast<size_t*>(block)[-1] & 0x2) != 0; }

TEST(KeepFreedMemoryTest, LargeBlocksComeFromTheHeapAfterwards) {
  constexpr size_t kBlock = size_t{16} << 20;
  void* before = std::malloc(kBlock);
  ASSERT_NE(before, nullptr);
  // Nothing this size was freed yet, so glibc's threshold is still its default.
  ASSERT_TRUE(IsMmapped(before)) << "glibc serves 16 MiB with mmap by default";
  ASSERT_TRUE(KeepFreedMemory().ok());
  void* after = std::malloc(kBlock);
  ASSERT_NE(after, nullptr);
  EXPECT_FALSE(IsMmapped(after));
  std::memset(after, 1, kBlock);
  std::free(after);
  std::free(before);
}

TEST(PinProcessTest, PinsToTheCoreAndRejectsOthers) {
  cpu_set_t original;
  ASSERT_EQ(sched_getaffinity(0, sizeof(original), &original), 0);
  int core = -1;
  for (int c = 0; c < CPU_SETSIZE && core < 0; ++c) {
    if (CPU_ISSET(c, &original)) core = c;
  }
  ASSERT_GE(core, 0);
  EXPECT_EQ(PinProcess(-1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PinProcess(CPU_SETSIZE).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(PinProcess(core).ok());
  cpu_set_t now;
  ASSERT_EQ(sched_getaffinity(0, sizeof(now), &now), 0);
  EXPECT_EQ(CPU_COUNT(&now), 1);
  EXPECT_TRUE(CPU_ISSET(core, &now));
  ASSERT_EQ(sched_setaffinity(0, sizeof(original), &original), 0);
}

}  // namespace
}  // namespace hecate::worker
