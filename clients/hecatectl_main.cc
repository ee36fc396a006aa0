// hecatectl: the operator CLI for the Hecate controller (see `hecatectl --help`).
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "clients/ctl/ctl.h"

int main(int argc, char** argv) {
  const char* env = std::getenv("HECATE_CONTROLLER");
  std::vector<std::string> args(argv + 1, argv + argc);
  return hecate::ctl::Run(args, env ? env : "", std::cout, std::cerr);
}
