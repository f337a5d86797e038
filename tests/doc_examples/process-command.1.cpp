#include <ptk/process/command.hpp>
int main() {
  // @example include/ptk/process/command.hpp 1
}
