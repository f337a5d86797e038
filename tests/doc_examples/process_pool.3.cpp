#include <ptk/process_pool.hpp>
// @example include/ptk/process_pool.hpp 3
int fib(int n) { return n; }
int main() {}
