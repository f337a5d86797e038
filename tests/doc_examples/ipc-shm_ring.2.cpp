#include <ptk/ipc/shm_ring.hpp>
void handle(int);
// @example include/ptk/ipc/shm_ring.hpp 2
