/// @file
/// @brief The thread module: thread pools, parallel loops, observable threads and
///        the synchronisation pieces the standard library lacks.
///
/// @code
/// #include <ptk/thread.hpp>
/// ptk::thread_pool pool;
/// auto f = pool.submit([] { return 6 * 7; });
/// ptk::parallel_for(pool, 0, 100, [](std::size_t i) { /* ... */ });
/// @endcode
#pragma once

#include <ptk/thread/future.hpp>
#include <ptk/thread/parallel.hpp>
#include <ptk/thread/sync.hpp>
#include <ptk/thread/thread.hpp>
#include <ptk/thread/thread_info.hpp>
#include <ptk/thread/thread_pool.hpp>
