#include <ptk/process/run.hpp>
using namespace std::chrono_literals;
int main() {
  // @example include/ptk/process/run.hpp 3
}
