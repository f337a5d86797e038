#include <asio.hpp>
#include <ptk/process_asio.hpp>
// @example include/ptk/process_asio.hpp 1
int main() {}
