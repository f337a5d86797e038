// @example include/ptk/process.hpp 1 lines 1-1
#include <cstdio>
int main() {
  // @example include/ptk/process.hpp 1 lines 2-
}
