// hecatectl commands that need no controller: `simulate`, `plan compute`, `trace ...`.
#ifndef HECATE_CLIENTS_CTL_OFFLINE_H_
#define HECATE_CLIENTS_CTL_OFFLINE_H_

#include <ostream>
#include <string>
#include <vector>

#include "clients/ctl/output.h"

namespace hecate::ctl {

// `args` start with the command ("simulate", "plan", "trace"). Sets *handled = false when the
// command is not an offline one.
int RunOffline(const std::vector<std::string>& args, Format format, std::ostream& out,
               std::ostream& err, bool* handled);

}  // namespace hecate::ctl

#endif  // HECATE_CLIENTS_CTL_OFFLINE_H_
