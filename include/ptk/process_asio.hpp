/// @file
/// @brief Waiting for a ptk::process from asio: `co_await ptk::async_wait_exit(p, use_awaitable)`.
///
/// The only process header that includes (standalone) asio. The child's pidfd is
/// watched by the asio executor's own reactor, so any number of children can be
/// awaited from one io_context thread.
///
/// With Clang and asio 1.24 (Debian 12), asio enables asio::awaitable only when
/// ASIO_HAS_CO_AWAIT=1 is defined; completion handlers work either way.
#pragma once

#include <ptk/config.hpp>
#include <ptk/process/process.hpp>

#include <fcntl.h>

#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>

#include <memory>
#include <system_error>
#include <utility>

namespace ptk {

/// @brief Waits asynchronously, on an asio executor, for `p` to exit, then reaps it.
///
/// The completion handler receives `(std::error_code, ptk::exit_status)`; the error
/// is set if the wait could not be started or was cancelled (operation_aborted when
/// the io_context stops). `p` must outlive the operation. A child that already
/// exited completes at once (through the executor, never inline).
///
/// @code
/// asio::awaitable<void> supervise(ptk::process& p) {
///   ptk::exit_status s = co_await ptk::async_wait_exit(p, asio::use_awaitable);
/// }
/// @endcode
/// @param ex the executor whose reactor watches the child.
/// @param p the child (spawned with a pidfd).
/// @param token an asio completion token (a handler, use_awaitable, deferred...).
/// @return whatever the completion token makes of the operation.
template <class Executor, class CompletionToken>
auto async_wait_exit(const Executor& ex, process& p, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(std::error_code, exit_status)>(
      [](auto handler, Executor executor, process* child) {
        auto pidfd_copy = child->pidfd() >= 0 ? ::fcntl(child->pidfd(), F_DUPFD_CLOEXEC, 0) : -1;
        if (child->status() || pidfd_copy < 0) {
          // Already reaped (or no pidfd): report through the executor, never inline.
          std::error_code ec;
          exit_status s;
          if (child->status()) {
            s = *child->status();
          } else {
            try {
              s = child->wait();
            } catch (const std::system_error& e) {
              ec = e.code();
            }
          }
          asio::post(executor, [h = std::move(handler), ec, s]() mutable { std::move(h)(ec, s); });
          return;
        }
        auto watch = std::make_unique<asio::posix::stream_descriptor>(executor, pidfd_copy);
        auto& w = *watch;
        w.async_wait(asio::posix::stream_descriptor::wait_read,
                     [h = std::move(handler), watch = std::move(watch),
                      child](const std::error_code& ec) mutable {
                       exit_status s;
                       std::error_code result = ec;
                       if (!ec) {
                         try {
                           s = child->wait();  // readable pidfd: reaping does not block
                         } catch (const std::system_error& e) {
                           result = e.code();
                         }
                       }
                       watch.reset();
                       std::move(h)(result, s);
                     });
      },
      token, ex, &p);
}

/// @brief As async_wait_exit(ex, p, token), on the I/O executor the completion
/// token is associated with (with asio::use_awaitable: the awaiting coroutine's).
/// @param p the child.
/// @param token an asio completion token; with use_awaitable, the awaiting coroutine's executor.
/// @return whatever the completion token makes of the operation.
template <class CompletionToken>
auto async_wait_exit(process& p, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(std::error_code, exit_status)>(
      [](auto handler, process* child) {
        auto ex = asio::get_associated_executor(handler);
        async_wait_exit(ex, *child, std::move(handler));
      },
      token, &p);
}

}  // namespace ptk
