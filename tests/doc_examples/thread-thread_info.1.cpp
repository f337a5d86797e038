#include <cstdio>
#include <ptk/thread/thread.hpp>
#include <ptk/thread/thread_info.hpp>
void crunch_some();
int main() {
  // @example include/ptk/thread/thread_info.hpp 1
}
