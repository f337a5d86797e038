// One of two translation units that include every ptk header: any non-inline
// definition in a header makes the link fail with a duplicate symbol.
#include "ptk_all_headers.hpp"

#include <string>

std::string odr_a_version() { return PTK_VERSION_STRING; }
int odr_a_pipe_is_cloexec() {
  auto p = ptk::detail::make_pipe();
  return ptk::detail::is_cloexec(p.first.get()) ? 1 : 0;
}
