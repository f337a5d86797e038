#include <ptk/ipc/queue.hpp>
void handle(int);
// @example include/ptk/ipc/queue.hpp 2
