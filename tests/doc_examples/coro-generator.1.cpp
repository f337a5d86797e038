#include <cstdio>
#include <ptk/coro/generator.hpp>
bool is_prime(int n);
// @example include/ptk/coro/generator.hpp 1 lines 1-3
int main() {
  // @example include/ptk/coro/generator.hpp 1 lines 4-
}
