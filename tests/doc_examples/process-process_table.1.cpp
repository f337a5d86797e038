#include <cstdio>
#include <ptk/process/process_table.hpp>
int main() {
  // @example include/ptk/process/process_table.hpp 1
}
