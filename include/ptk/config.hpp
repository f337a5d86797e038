/// @file
/// @brief Platform and compiler requirements, checked once for every ptk header.
///
/// ptk is Linux-only by design (pidfd, clone3, futex, memfd, /proc): rather than
/// degrade silently elsewhere it stops the build with a clear message.
#pragma once

#if !defined(__linux__)
#error "ptk supports Linux only: it is built on futex, pidfd, clone3, memfd and /proc."
#endif

#if !defined(__cplusplus) || __cplusplus < 202002L
#error "ptk needs C++20: compile with -std=c++20 (or later)."
#endif

#if defined(__clang__)
#if __clang_major__ < 14
#error "ptk needs Clang 14 or later."
#endif
#elif defined(__GNUC__)
#if __GNUC__ < 12
#error "ptk needs GCC 12 or later."
#endif
#endif

#include <version>

#if !defined(__cpp_impl_coroutine) || !defined(__cpp_lib_jthread)
#error "ptk needs coroutines and std::jthread/std::stop_token from the C++20 library."
#endif
