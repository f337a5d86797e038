#include <ptk/thread/thread.hpp>
int main() {
  // @example include/ptk/thread/thread.hpp 1
}
