#include <ptk/coro/async_scope.hpp>
ptk::task<void> f(ptk::async_scope& scope) {
  // @example include/ptk/coro/async_scope.hpp 2
}
int main() {}
