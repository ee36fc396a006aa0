// hecate: the launcher. `hecate run` starts an embedded controller and worker processes.
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::printf("usage: hecate run [flags]\n");
    return argc < 2 ? 2 : 0;
  }
  if (std::strcmp(argv[1], "run") == 0) {
    std::fprintf(stderr, "hecate run: training is not implemented yet (worker issues pending)\n");
    return 1;
  }
  std::fprintf(stderr, "hecate: unknown command '%s'\n", argv[1]);
  return 2;
}
