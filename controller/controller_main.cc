// hecate-controller (not implemented yet).
#include <cstdio>
int main(int argc, char**) {
  std::fprintf(stderr, "hecate-controller: not implemented yet\n");
  return argc > 1 ? 0 : 1;
}
