#include <chrono>
#include <cstdio>
#include <ptk/process_pool.hpp>
using namespace std::chrono_literals;
int fib(int);
PTK_REMOTE(fib);
int main() {
  // @example include/ptk/process_pool.hpp 4
}
