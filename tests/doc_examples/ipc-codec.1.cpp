#include <ptk/ipc/codec.hpp>
#include <ptk/ipc/pipe.hpp>
// @example include/ptk/ipc/codec.hpp 1
static_assert(ptk::encodable<point>);
void g() {
  auto [a, b] = ptk::pipe<point>::create();
  a.send(point{"x", 1, 2});
  auto r = b.recv();
  (void)r;
}
