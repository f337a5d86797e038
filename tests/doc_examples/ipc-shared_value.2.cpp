#include <ptk/ipc/shared_value.hpp>
void use(double);
void f() {
  // @example include/ptk/ipc/shared_value.hpp 2
}
