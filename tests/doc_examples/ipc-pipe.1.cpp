#include <ptk/ipc/pipe.hpp>
#include <ptk/process.hpp>
void f() {
  // @example include/ptk/ipc/pipe.hpp 1
}
