#include <cstdio>
#include <ptk/process/exit_status.hpp>
#include <ptk/process/process.hpp>
int main() {
  // @example include/ptk/process/exit_status.hpp 1
}
