#include <sys/stat.h>
#include <ptk/error.hpp>
void make(const char* path) {
  // @example include/ptk/error.hpp 2
}
int main() {}
