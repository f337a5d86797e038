#include <functional>
#include <ptk/thread/parallel.hpp>
#include <vector>
double f(ptk::thread_pool& pool, const std::vector<double>& v) {
  // @example include/ptk/thread/parallel.hpp 2
  return sum;
}
int main() {}
