#include <ptk/thread/sync.hpp>
#include <thread>
#include <vector>
int main() {
  // @example include/ptk/thread/sync.hpp 3
}
