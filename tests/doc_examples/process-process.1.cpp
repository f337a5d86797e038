#include <ptk/process/process.hpp>
int main() {
  // @example include/ptk/process/process.hpp 1
}
