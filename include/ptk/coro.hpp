/// @file
/// @brief The coroutine module: ptk::task, ptk::sync_wait, ptk::when_all,
///        ptk::when_any, timers, ptk::async_scope and ptk::generator.
///
/// This header does not include asio; the asio integration (ptk::await_asio,
/// ptk::async_run, ptk::schedule_on, timers on asio executors) is in `<ptk/coro_asio.hpp>`.
///
/// @code
/// #include <ptk/coro.hpp>
/// ptk::task<int> compute(ptk::thread_pool& pool, int x) {
///   co_await pool.schedule();
///   co_return x * x;
/// }
/// ptk::thread_pool pool;
/// auto [a, b] = ptk::sync_wait(ptk::when_all(compute(pool, 2), compute(pool, 3)));  // 4, 9
/// @endcode
#pragma once

#include <ptk/coro/async_scope.hpp>
#include <ptk/coro/generator.hpp>
#include <ptk/coro/sync_wait.hpp>
#include <ptk/coro/task.hpp>
#include <ptk/coro/timer.hpp>
#include <ptk/coro/when_all.hpp>
#include <ptk/coro/when_any.hpp>
