#include <ptk/ipc/shared_value.hpp>
void f() {
  // @example include/ptk/ipc/shared_value.hpp 1
}
