#include <cstdio>
#include <ptk/thread/thread_pool.hpp>
int main() {
  // @example include/ptk/thread/thread_pool.hpp 1
}
