#include <cstring>
#include <ptk/ipc/shared_memory.hpp>
void f() {
  // @example include/ptk/ipc/shared_memory.hpp 1
}
