#include <cstdio>
#include <ptk/ipc/shm_ring.hpp>
void f() {
  // @example include/ptk/ipc/shm_ring.hpp 1
}
