#include <ptk/version.hpp>
// @example include/ptk/version.hpp 1
int main() {}
