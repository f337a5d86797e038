#include <csignal>
#include <ptk/process/command.hpp>
#include <ptk/process/process.hpp>
int main() {
  // @example include/ptk/process/command.hpp 3
}
