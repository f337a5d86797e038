// @example include/ptk/ptk.hpp 1
int main() {}
