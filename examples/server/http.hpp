// ptk-server's HTTP/1.1 layer: requests parsed by http-parser, a router with {param}
// path segments, keep-alive, limits (header bytes, body bytes, connections), idle and
// slow-client timeouts, chunked streaming responses and the hand-over of a socket to
// a WebSocket session. Networking is standalone asio with C++20 coroutines.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/strand.hpp>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace server {

using json = nlohmann::json;
using asio::ip::tcp;

/// A parsed request. Header names are lower-cased.
struct request {
  std::string method;
  std::string target;  ///< as sent: path and query
  std::string path;    ///< percent-decoded path
  std::string query;   ///< raw query string, without '?'
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::map<std::string, std::string> params;  ///< from {name} route segments
  bool keep_alive = true;
  std::string remote;  ///< peer address, for logs

  /// @return the first header with that (lower-case) name, or "".
  [[nodiscard]] std::string_view header(std::string_view name) const;
  /// @return the query parameter `name`, percent-decoded, if present.
  [[nodiscard]] std::optional<std::string> query_param(std::string_view name) const;
};

/// Writes the chunks of a streaming (chunked) response.
class chunk_writer {
 public:
  explicit chunk_writer(tcp::socket& s) : socket_(s) {}
  /// Sends one chunk (nothing for an empty view). Throws when the client is gone.
  asio::awaitable<void> write(std::string_view data);

 private:
  tcp::socket& socket_;
};

/// A response. Exactly one of body, stream and upgrade is used.
struct response {
  int status = 200;
  std::string_view content_type = "application/json";  ///< a string literal
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  /// A body that outlives the response (a constant), sent instead of `body` if set.
  std::string_view static_body;
  /// A streaming body, sent with Transfer-Encoding: chunked.
  std::function<asio::awaitable<void>(chunk_writer&)> stream;
  /// Takes over the connection after the response head (101 Switching Protocols).
  std::function<asio::awaitable<void>(tcp::socket&)> upgrade;
};

/// @return `j` as text; bytes that are not UTF-8 (quoted from a client) become U+FFFD.
std::string to_text(const json& j);
/// A JSON response.
response json_response(int status, const json& body);
/// A JSON error body: {"error": {"status": 404, "message": ..., "detail": ...}}.
response error_response(int status, std::string_view message, const json& detail = nullptr);

/// An error a handler throws to answer with a status and a JSON error body.
struct http_error {
  int status;
  std::string message;
  json detail = nullptr;
};

using handler = std::function<asio::awaitable<response>(request&)>;

/// Routes (method, path) to handlers; `{name}` in a pattern captures one segment.
class router {
 public:
  void add(std::string method, std::string pattern, handler h);
  /// Finds the handler and fills req.params; sets `route` to the pattern (for metrics).
  /// @return the handler, or null with `status` 404 (no such path) or 405 (wrong method).
  const handler* find(request& req, std::string& route, std::size_t& index, int& status) const;
  static constexpr std::size_t unmatched = static_cast<std::size_t>(-1);

 private:
  struct entry {
    std::string method;
    std::string pattern;
    std::vector<std::string> segments;
    handler h;
  };
  std::vector<entry> routes_;
};

/// Limits and timeouts of the HTTP layer.
struct http_limits {
  std::size_t max_header_bytes = 8 * 1024;
  std::size_t max_body_bytes = 1024 * 1024;
  std::size_t max_connections = 1024;
  std::chrono::milliseconds request_timeout{10'000};  ///< to receive one whole request
  std::chrono::milliseconds idle_timeout{30'000};     ///< between keep-alive requests
};

/// Called once per request after the response is sent: method, route pattern, the
/// route's index in registration order (router::unmatched for none), status, seconds.
using request_observer = std::function<void(std::string_view method, std::string_view route,
                                            std::size_t route_index, int status, double)>;

/// The listening server. Accepts on `io`; each connection then lives on one of
/// `connection_contexts`, taken in turn, each run by exactly one thread: a request
/// is read, handled and answered by the thread its socket's readiness woke, with no
/// hand-off between threads and no strand. Without connection_contexts, connections
/// live on strands of `io` (which then may have any number of threads).
class http_server {
 public:
  http_server(asio::io_context& io, router routes, http_limits limits, request_observer observe,
              std::vector<asio::io_context*> connection_contexts = {});
  /// Binds and listens. @return the bound port (useful with port 0).
  unsigned short listen(const std::string& host, unsigned short port);
  /// Starts accepting (spawned on the io_context).
  void start();
  /// Stops accepting and closes every open connection (in-flight handlers see errors)
  /// but WebSocket ones, which their sessions close (with a close frame).
  void stop();
  /// @return connections open now.
  [[nodiscard]] std::size_t connections() const noexcept { return open_->load(); }

 private:
  struct connection;
  asio::awaitable<void> accept_loop();
  asio::awaitable<void> session(std::shared_ptr<connection> c);
  asio::awaitable<void> watchdog(std::shared_ptr<connection> c);
  asio::awaitable<void> dispatch(connection& c, request& req);
  asio::awaitable<void> send_error_and_close(connection& c, int status, std::string_view message,
                                             const json& detail);

  asio::io_context& io_;
  std::vector<asio::io_context*> contexts_;  // single-threaded, for connections
  std::size_t next_context_ = 0;             // round robin (the accept loop only)
  // The accept loop and stop()'s close of the acceptor run here, never at once (with
  // a shared io_context, `io` has several threads).
  asio::any_io_executor accept_strand_;
  tcp::acceptor acceptor_;
  router routes_;
  http_limits limits_;
  request_observer observe_;
  // Shared with the sessions: a session frame destroyed late never touches a dead server.
  std::shared_ptr<std::atomic<std::size_t>> open_ = std::make_shared<std::atomic<std::size_t>>(0);
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::vector<std::weak_ptr<connection>> live_;
};

/// @return the reason phrase of a status code.
std::string_view reason(int status);

/// Percent-decodes `s` ('+' stays '+'). @return nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view s);

}  // namespace server
