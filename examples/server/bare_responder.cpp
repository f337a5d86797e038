// The load-test baseline: a bare asio HTTP responder that answers every request with
// the same fixed /health body, with keep-alive, and parses nothing beyond finding the
// end of each request head. scripts/loadtest runs it beside ptk-server in one run.
//
//   ptk-bare-responder <port> [threads] [--shared]
//
// By default it has ptk-server's threading: one io_context per thread, each
// connection on one of them in turn, so the two differ only in what they do per
// request. --shared runs one io_context on all threads instead (asio's thread-pool
// model: any thread may take any connection's next event), for comparison.
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/signal_set.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "io_threads.hpp"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using asio::ip::tcp;

namespace {

constexpr std::string_view reply =
    "HTTP/1.1 200 OK\r\nServer: bare\r\nContent-Type: application/json\r\n"
    "Content-Length: 28\r\nConnection: keep-alive\r\n\r\n{\"ready\":true,\"status\":\"ok\"}";

asio::awaitable<void> session(tcp::socket s) {
  std::array<char, 16384> buf;
  std::string pending;
  try {
    for (;;) {
      const std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::use_awaitable);
      pending.append(buf.data(), n);
      std::size_t replies = 0;
      for (std::size_t end; (end = pending.find("\r\n\r\n")) != std::string::npos;) {
        pending.erase(0, end + 4);
        ++replies;
      }
      std::string out;
      for (std::size_t i = 0; i < replies; ++i) out += reply;
      if (!out.empty()) co_await asio::async_write(s, asio::buffer(out), asio::use_awaitable);
    }
  } catch (const std::exception&) {
  }
}

// Each connection lives on one of `contexts`, in turn; none: on a strand of `io`.
asio::awaitable<void> accept_loop(asio::io_context& io, std::vector<asio::io_context*> contexts,
                                  tcp::acceptor& acceptor) {
  for (std::size_t next = 0;; ++next) {
    const asio::any_io_executor home =
        contexts.empty() ? asio::any_io_executor(asio::make_strand(io))
                         : asio::any_io_executor(contexts[next % contexts.size()]->get_executor());
    tcp::socket s = co_await acceptor.async_accept(home, asio::use_awaitable);
    s.set_option(tcp::no_delay(true));
    const auto ex = s.get_executor();
    asio::co_spawn(ex, session(std::move(s)), asio::detached);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: ptk-bare-responder <port> [threads] [--shared]\n");
    return 2;
  }
  const auto port = static_cast<unsigned short>(std::atoi(argv[1]));
  const int thread_count = argc > 2 ? std::max(1, std::atoi(argv[2])) : 2;
  const bool shared = argc > 3 && std::string_view(argv[3]) == "--shared";
  server::io_threads threads(static_cast<unsigned>(thread_count), shared);
  asio::io_context& io = threads.main();
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  std::printf("bare responder on http://127.0.0.1:%u\n",
              static_cast<unsigned>(acceptor.local_endpoint().port()));
  std::fflush(stdout);
  asio::co_spawn(io, accept_loop(io, threads.for_connections(), acceptor), asio::detached);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code, int) { threads.stop(); });
  threads.run();
}
