// hecatectl plan compute's --loads reader: a CSV of layer,expert,tokens or a trace.
#include <cstddef>
#include <cstdint>

#include "clients/ctl/offline.h"
#include "tests/fuzz/fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)hecate::ctl::ReadLoads(hecate::fuzz::ScratchFile(data, size), hecate::fuzz::TestCluster(),
                               hecate::fuzz::TestModel(), 5);
  return 0;
}
