// Must not compile: a pointer means nothing in another process.
#include <ptk/ipc.hpp>

int main() {
  auto v = ptk::shared_value<int*>::anonymous();
  (void)v;
}
