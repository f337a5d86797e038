// @example include/ptk/thread.hpp 1 lines 1-1
int main() {
  // @example include/ptk/thread.hpp 1 lines 2-
}
