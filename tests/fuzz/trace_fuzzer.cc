// Load traces (wire::ReadTrace): what hecatectl simulate/trace and the benchmarks read.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_inputs.h"
#include "wire/trace.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)hecate::wire::ReadTrace(hecate::fuzz::ScratchFile(data, size));
  return 0;
}
