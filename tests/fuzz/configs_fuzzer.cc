// Cluster and model description files (proto3 JSON): sim::LoadCluster and sim::LoadModel, what
// hecatectl simulate / plan compute take as --cluster and --model.
#include <cstddef>
#include <cstdint>

#include "sim/configs.h"
#include "tests/fuzz/fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = hecate::fuzz::ScratchFile(data, size);
  (void)hecate::sim::LoadCluster(path);
  (void)hecate::sim::LoadModel(path);
  return 0;
}
