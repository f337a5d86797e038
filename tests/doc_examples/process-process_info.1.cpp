#include <cstdio>
#include <ptk/process/process_info.hpp>
int main() {
  // @example include/ptk/process/process_info.hpp 1
}
