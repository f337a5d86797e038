#include <cstdio>
#include <ptk/thread/sync.hpp>
#include <thread>
int main() {
  // @example include/ptk/thread/sync.hpp 2
}
