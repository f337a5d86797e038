#include <ptk/ptk.hpp>

#include <cstdio>
#include <cstring>

int main() {
  std::printf("consumer found ptk %s\n", PTK_VERSION_STRING);
  const auto e = ptk::os_error(ENOENT, "consumer");
  return std::strcmp(e.what(), "consumer: No such file or directory") == 0 ? 0 : 1;
}
