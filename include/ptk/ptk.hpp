/// @file
/// @brief The umbrella header: everything ptk offers.
///
/// @code
/// #include <ptk/ptk.hpp>
/// @endcode
///
/// Each module also has its own header, so a program that needs only one module
/// compiles only that module.
#pragma once

#include <ptk/config.hpp>
#include <ptk/coro.hpp>
#include <ptk/error.hpp>
#include <ptk/ipc.hpp>
#include <ptk/process.hpp>
#include <ptk/process_pool.hpp>
#include <ptk/thread.hpp>
#include <ptk/version.hpp>

/// @brief Everything public in ptk lives in this namespace; internals are in `ptk::detail`.
namespace ptk {}
