// 15 — a TCP echo server on asio whose handlers are ptk tasks.
//
// The server is ptk code: an accept loop and one session task per connection, kept
// in a ptk::async_scope so that none outlives the server. Each socket operation is
// an ordinary asio operation made awaitable with asio::use_awaitable and awaited
// from the ptk task with ptk::await_asio. The whole server runs as one asio
// operation (ptk::async_run), next to two clients written as plain asio
// coroutines, all on one io_context thread. The server accepts two clients, echoes
// their lines, and stops when both have hung up, so the program ends by itself.
#include <ptk/coro.hpp>
#include <ptk/coro_asio.hpp>

#include <asio/buffer.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <system_error>
#include <vector>

using asio::ip::tcp;

namespace {

// One connection: echo whatever arrives until the client hangs up.
ptk::task<void> session(tcp::socket socket, int id) {
  const auto ex = socket.get_executor();
  char buf[1024];
  std::size_t echoed = 0;
  for (;;) {
    std::size_t n = 0;
    try {
      n = co_await ptk::await_asio(ex,
                                   socket.async_read_some(asio::buffer(buf), asio::use_awaitable));
    } catch (const std::system_error& e) {
      if (e.code() != asio::error::eof) throw;
      break;  // the client closed its side
    }
    co_await ptk::await_asio(ex,
                             asio::async_write(socket, asio::buffer(buf, n), asio::use_awaitable));
    echoed += n;
  }
  std::printf("server: session %d done, echoed %zu bytes\n", id, echoed);
}

// Accepts `clients` connections, one session task each, then waits for them all.
ptk::task<void> serve(tcp::acceptor& acceptor, int clients) {
  ptk::async_scope sessions;
  for (int id = 1; id <= clients; ++id) {
    tcp::socket s = co_await ptk::await_asio(acceptor.get_executor(),
                                             acceptor.async_accept(asio::use_awaitable));
    std::printf("server: accepted connection %d\n", id);
    sessions.spawn(session(std::move(s), id));  // runs concurrently with the next accept
  }
  co_await sessions.join();
  std::puts("server: every session finished, stopping");
}

// A client, as a plain asio coroutine: send each line, read the echo back.
asio::awaitable<void> client(std::string name, tcp::endpoint server,
                             std::vector<std::string> lines) {
  tcp::socket socket(co_await asio::this_coro::executor);
  co_await socket.async_connect(server, asio::use_awaitable);
  for (const std::string& line : lines) {
    co_await asio::async_write(socket, asio::buffer(line), asio::use_awaitable);
    std::string reply(line.size(), '\0');
    co_await asio::async_read(socket, asio::buffer(reply), asio::use_awaitable);
    std::printf("%s: sent \"%s\", got back \"%s\"\n", name.c_str(), line.c_str(), reply.c_str());
  }
  socket.shutdown(tcp::socket::shutdown_send);  // the server's read sees end of file
}

}  // namespace

int main() {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const tcp::endpoint server = acceptor.local_endpoint();  // port 0: the kernel picked one
  std::printf("echo server on %s:%u\n", server.address().to_string().c_str(),
              static_cast<unsigned>(server.port()));

  bool server_ok = false;
  ptk::async_run(io, serve(acceptor, 2), [&](std::exception_ptr e) {
    server_ok = e == nullptr;
    if (e) std::puts("server: failed");
  });
  asio::co_spawn(io, client("alice", server, {"hello", "how are you?"}), asio::detached);
  asio::co_spawn(io, client("bob", server, {"ping", "pong", "bye"}), asio::detached);
  io.run();  // returns when the server and both clients are done
  std::puts(server_ok ? "all done on one io_context thread" : "the server failed");
  return server_ok ? 0 : 1;
}
