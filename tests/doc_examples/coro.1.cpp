// @example include/ptk/coro.hpp 1 lines 1-1
// @example include/ptk/coro.hpp 1 lines 2-5
int main() {
  // @example include/ptk/coro.hpp 1 lines 6-
}
