#include <ptk/process_pool.hpp>
using namespace std::chrono_literals;
// @example include/ptk/process_pool.hpp 1
