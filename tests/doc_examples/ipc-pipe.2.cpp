#include <ptk/ipc/pipe.hpp>
void handle(int);
// @example include/ptk/ipc/pipe.hpp 2
