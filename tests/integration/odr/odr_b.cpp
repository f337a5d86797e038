// The second translation unit of the ODR check (see odr_a.cpp).
#include "ptk_all_headers.hpp"

#include <string>

std::string odr_b_error_text() { return ptk::os_error(ENOENT, "odr").what(); }
int odr_b_futex_wake() {
  ptk::detail::futex_word w{0};
  return ptk::detail::futex_wake(w);
}
