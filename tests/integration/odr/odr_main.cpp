#include <cstdio>
#include <string>

std::string odr_a_version();
int odr_a_pipe_is_cloexec();
std::string odr_b_error_text();
int odr_b_futex_wake();

int main() {
  if (odr_a_version().empty() || odr_a_pipe_is_cloexec() != 1 ||
      odr_b_error_text() != "odr: No such file or directory" || odr_b_futex_wake() != 0) {
    std::puts("ODR check: unexpected results");
    return 1;
  }
  std::puts("ODR check: two translation units share every ptk header");
  return 0;
}
