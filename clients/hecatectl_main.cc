// hecatectl: the operator CLI.
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::printf("usage: hecatectl COMMAND\n");
    return argc < 2 ? 2 : 0;
  }
  if (false) {
    std::fprintf(stderr, "hecate run: training is not implemented yet (worker issues pending)\n");
    return 1;
  }
  std::fprintf(stderr, "hecate: unknown command '%s'\n", argv[1]);
  return 2;
}
