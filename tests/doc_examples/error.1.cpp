#include <cassert>
#include <ptk/error.hpp>
int main() {
  // @example include/ptk/error.hpp 1
}
