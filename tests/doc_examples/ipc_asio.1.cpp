#include <asio/awaitable.hpp>
#include <asio/use_awaitable.hpp>
#include <ptk/ipc_asio.hpp>
struct job {
  int id;
};
asio::awaitable<void> handle(const job&);
// @example include/ptk/ipc_asio.hpp 1
