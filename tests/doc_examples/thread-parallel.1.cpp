#include <cmath>
#include <ptk/thread/parallel.hpp>
#include <vector>
void f(ptk::thread_pool& pool) {
  // @example include/ptk/thread/parallel.hpp 1
}
int main() {}
