#include <ptk/thread/future.hpp>
#include <ptk/thread/thread_pool.hpp>
int main() {
  // @example include/ptk/thread/future.hpp 1
}
