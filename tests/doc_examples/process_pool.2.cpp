#include <cstdio>
#include <ptk/process_pool.hpp>
#include <string>
int parse(std::string s);
PTK_REMOTE(parse);
void f(ptk::process_pool& pool) {
  // @example include/ptk/process_pool.hpp 2
}
int main() {}
