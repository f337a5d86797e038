#include "http.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <http_parser.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <exception>
#include <limits>

namespace server {

namespace {

using clock = std::chrono::steady_clock;
constexpr std::string_view crlf = "\r\n";
constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

// The segments of a path, without allocating; at most max_segments (more: none).
constexpr std::size_t max_segments = 16;
struct path_segments {
  std::array<std::string_view, max_segments> items{};
  std::size_t size = 0;
  bool too_many = false;
};

path_segments split_path(std::string_view path) {
  path_segments out;
  std::size_t at = 0;
  while (at < path.size()) {
    if (path[at] == '/') {
      ++at;
      continue;
    }
    const std::size_t end = std::min(path.find('/', at), path.size());
    if (out.size == max_segments) {
      out.too_many = true;
      break;
    }
    out.items[out.size++] = path.substr(at, end - at);
    at = end;
  }
  return out;
}

int hex_value(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

// What the http-parser callbacks fill for one request.
struct parse_state {
  request req;
  std::string field;
  bool in_value = false;
  std::size_t header_bytes = 0;
  std::size_t max_header_bytes = 0;
  std::size_t max_body_bytes = 0;
  bool complete = false;
  bool headers_too_large = false;
  bool body_too_large = false;
  bool expect_continue = false;  // Expect: 100-continue, and a body to come

  bool count_header(std::size_t n) {
    header_bytes += n;
    headers_too_large = header_bytes > max_header_bytes;
    return !headers_too_large;
  }
};

parse_state& state_of(http_parser* p) { return *static_cast<parse_state*>(p->data); }

const http_parser_settings& parser_settings() {
  static const http_parser_settings settings = [] {
    http_parser_settings s{};
    http_parser_settings_init(&s);
    s.on_url = [](http_parser* p, const char* at, std::size_t n) {
      auto& st = state_of(p);
      if (!st.count_header(n)) return 1;
      st.req.target.append(at, n);
      return 0;
    };
    s.on_header_field = [](http_parser* p, const char* at, std::size_t n) {
      auto& st = state_of(p);
      if (!st.count_header(n)) return 1;
      if (st.in_value || st.req.headers.empty()) {
        st.req.headers.emplace_back();
        st.in_value = false;
      }
      st.req.headers.back().first.append(at, n);
      return 0;
    };
    s.on_header_value = [](http_parser* p, const char* at, std::size_t n) {
      auto& st = state_of(p);
      if (!st.count_header(n)) return 1;
      if (st.req.headers.empty()) return 1;
      st.in_value = true;
      st.req.headers.back().second.append(at, n);
      return 0;
    };
    s.on_headers_complete = [](http_parser* p) {
      auto& st = state_of(p);
      st.req.method = http_method_str(static_cast<http_method>(p->method));
      st.req.keep_alive = http_should_keep_alive(p) != 0;
      for (auto& [name, value] : st.req.headers) {
        name = lower(name);
        if (name == "expect" && lower(value) == "100-continue") st.expect_continue = true;
      }
      if ((p->flags & F_CONTENTLENGTH) != 0 && p->content_length > st.max_body_bytes) {
        st.body_too_large = true;
        return -1;
      }
      return 0;
    };
    s.on_body = [](http_parser* p, const char* at, std::size_t n) {
      auto& st = state_of(p);
      if (st.req.body.size() + n > st.max_body_bytes) {
        st.body_too_large = true;
        return 1;
      }
      st.req.body.append(at, n);
      return 0;
    };
    s.on_message_complete = [](http_parser* p) {
      state_of(p).complete = true;
      http_parser_pause(p, 1);  // leave pipelined bytes for the next request
      return 0;
    };
    return s;
  }();
  return settings;
}

std::string_view body_of(const response& r) {
  return r.static_body.data() != nullptr ? r.static_body : std::string_view(r.body);
}

std::string response_head(const response& r, bool keep_alive, bool chunked) {
  std::string head;
  head.reserve(160);
  head += "HTTP/1.1 ";
  head += std::to_string(r.status);
  head += ' ';
  head += reason(r.status);
  head += "\r\nServer: ptk-server\r\n";
  if (r.status != 101) {
    head += "Content-Type: ";
    head += r.content_type;
    head += "\r\n";
    if (chunked) {
      head += "Transfer-Encoding: chunked\r\n";
    } else {
      head += "Content-Length: ";
      head += std::to_string(body_of(r).size());
      head += "\r\n";
    }
    head += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  }
  for (const auto& [name, value] : r.headers) {
    head += name;
    head += ": ";
    head += value;
    head += "\r\n";
  }
  head += "\r\n";
  return head;
}

}  // namespace

// Fills req.path (percent-decoded) and req.query from req.target.
// @return null, or what is wrong with the target.
const char* split_target(request& req) {
  http_parser_url url{};
  http_parser_url_init(&url);
  if (http_parser_parse_url(req.target.data(), req.target.size(), 0, &url) != 0 ||
      (url.field_set & (1U << UF_PATH)) == 0) {
    return "malformed request target";
  }
  const auto field = [&](int f) {
    return std::string_view(req.target).substr(url.field_data[f].off, url.field_data[f].len);
  };
  auto path = percent_decode(field(UF_PATH));
  if (!path) return "malformed percent-encoding in path";
  req.path = std::move(*path);
  if ((url.field_set & (1U << UF_QUERY)) != 0) req.query = std::string(field(UF_QUERY));
  return nullptr;
}

std::string_view request::header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (n == name) return v;
  }
  return {};
}

std::optional<std::string> request::query_param(std::string_view name) const {
  std::string_view rest = query;
  while (!rest.empty()) {
    const std::size_t amp = std::min(rest.find('&'), rest.size());
    const std::string_view pair = rest.substr(0, amp);
    rest.remove_prefix(std::min(amp + 1, rest.size()));
    const std::size_t eq = pair.find('=');
    if (pair.substr(0, eq) != name) continue;
    if (eq == std::string_view::npos) return std::string{};
    return percent_decode(pair.substr(eq + 1));
  }
  return std::nullopt;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = hex_value(s[i + 1]);
    const int lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::string_view reason(int status) {
  switch (status) {
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 426:
      return "Upgrade Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

std::string to_text(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

response json_response(int status, const json& body) {
  response r;
  r.status = status;
  r.body = to_text(body);
  return r;
}

response error_response(int status, std::string_view message, const json& detail) {
  json err = {{"status", status}, {"message", message}};
  if (!detail.is_null()) err["detail"] = detail;
  return json_response(status, json{{"error", std::move(err)}});
}

asio::awaitable<void> chunk_writer::write(std::string_view data) {
  if (data.empty()) co_return;
  std::string head;
  char digits[24];
  const int n = std::snprintf(digits, sizeof digits, "%zx\r\n", data.size());
  head.assign(digits, static_cast<std::size_t>(n));
  const std::vector<asio::const_buffer> parts{asio::buffer(head), asio::buffer(data),
                                              asio::buffer(crlf)};
  co_await asio::async_write(socket_, parts, asio::use_awaitable);
}

void router::add(std::string method, std::string pattern, handler h) {
  entry e{std::move(method), std::move(pattern), {}, std::move(h)};
  const auto segs = split_path(e.pattern);
  for (std::size_t i = 0; i < segs.size; ++i) e.segments.emplace_back(segs.items[i]);
  routes_.push_back(std::move(e));
}

const handler* router::find(request& req, std::string& route, std::size_t& index,
                            int& status) const {
  const auto segments = split_path(req.path);
  const auto is_param = [](const std::string& seg) {
    return seg.size() > 2 && seg.front() == '{' && seg.back() == '}';
  };
  status = 404;
  index = unmatched;
  if (segments.too_many) return nullptr;
  for (std::size_t r = 0; r < routes_.size(); ++r) {
    const entry& e = routes_[r];
    if (e.segments.size() != segments.size) continue;
    bool match = true;
    for (std::size_t i = 0; i < segments.size && match; ++i) {
      match = is_param(e.segments[i]) || e.segments[i] == segments.items[i];
    }
    if (!match) continue;
    route = e.pattern;
    if (e.method != req.method) {
      status = 405;
      continue;
    }
    for (std::size_t i = 0; i < segments.size; ++i) {
      const std::string& want = e.segments[i];
      if (is_param(want)) {
        req.params[want.substr(1, want.size() - 2)] = std::string(segments.items[i]);
      }
    }
    status = 200;
    index = r;
    return &e.h;
  }
  return nullptr;
}

struct http_server::connection {
  explicit connection(tcp::socket s) : socket(std::move(s)), timer(socket.get_executor()) {}
  tcp::socket socket;
  asio::steady_timer timer;
  // The watchdog closes the socket once `deadline` passes while no handler runs.
  // Moving the deadline later costs nothing (the watchdog notices when it wakes);
  // only an earlier deadline than the armed one cancels the timer. So a request
  // that arrives whole in one read touches no timer at all.
  clock::time_point deadline = clock::time_point::max();
  bool busy = false;      // a handler is running: never a timeout
  bool upgraded = false;  // a WebSocket now: its session closes it (stop() leaves it)

  void expire_at(clock::time_point t) {
    deadline = t;
    if (t < timer.expiry()) timer.cancel();  // the watchdog re-arms for the earlier time
  }
  void close() {
    std::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    timer.cancel();
  }
};

asio::awaitable<void> http_server::send_error_and_close(connection& c, int status,
                                                        std::string_view message,
                                                        const json& detail) {
  const response r = error_response(status, message, detail);
  const std::string head = response_head(r, false, false);
  const std::vector<asio::const_buffer> parts{asio::buffer(head), asio::buffer(r.body)};
  std::error_code ec;
  co_await asio::async_write(c.socket, parts, asio::redirect_error(asio::use_awaitable, ec));
  if (observe_) observe_("", "", router::unmatched, status, 0.0);
  c.close();
}

http_server::http_server(asio::io_context& io, router routes, http_limits limits,
                         request_observer observe,
                         std::vector<asio::io_context*> connection_contexts)
    : io_(io),
      contexts_(std::move(connection_contexts)),
      accept_strand_(asio::make_strand(io)),
      acceptor_(io),
      routes_(std::move(routes)),
      limits_(limits),
      observe_(std::move(observe)) {
  http_parser_set_max_header_size(static_cast<std::uint32_t>(limits_.max_header_bytes + 1024));
}

unsigned short http_server::listen(const std::string& host, unsigned short port) {
  const tcp::endpoint ep(asio::ip::make_address(host), port);
  acceptor_.open(ep.protocol());
  acceptor_.set_option(tcp::acceptor::reuse_address(true));
  acceptor_.bind(ep);
  acceptor_.listen(asio::socket_base::max_listen_connections);
  return acceptor_.local_endpoint().port();
}

void http_server::start() { asio::co_spawn(accept_strand_, accept_loop(), asio::detached); }

void http_server::stop() {
  stopping_ = true;
  asio::post(accept_strand_, [this] {
    std::error_code ignored;
    acceptor_.close(ignored);
  });
  const std::lock_guard lock(mutex_);
  for (auto& weak : live_) {
    if (auto c = weak.lock()) {
      asio::post(c->socket.get_executor(), [c] {
        if (!c->upgraded) c->close();
      });
    }
  }
}

asio::awaitable<void> http_server::accept_loop() {
  for (;;) {
    std::error_code ec;
    const asio::any_io_executor home =
        contexts_.empty()
            ? asio::any_io_executor(asio::make_strand(io_))
            : asio::any_io_executor(contexts_[next_context_++ % contexts_.size()]->get_executor());
    tcp::socket socket =
        co_await acceptor_.async_accept(home, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (!acceptor_.is_open() || stopping_) co_return;
      continue;  // EMFILE and friends: keep serving the connections we have
    }
    socket.set_option(tcp::no_delay(true), ec);
    auto c = std::make_shared<connection>(std::move(socket));
    {
      const std::lock_guard lock(mutex_);
      std::erase_if(live_, [](const auto& w) { return w.expired(); });
      live_.push_back(c);
    }
    const auto ex = c->socket.get_executor();
    asio::co_spawn(ex, session(c), asio::detached);
    asio::co_spawn(ex, watchdog(c), asio::detached);
  }
}

asio::awaitable<void> http_server::watchdog(std::shared_ptr<connection> c) {
  while (c->socket.is_open()) {
    c->timer.expires_at(c->deadline);
    std::error_code ec;
    co_await c->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    const auto now = clock::now();
    if (c->busy) {
      c->deadline = std::max(c->deadline, now + limits_.idle_timeout);
    } else if (c->deadline <= now) {
      c->close();
      co_return;
    }
  }
}

asio::awaitable<void> http_server::session(std::shared_ptr<connection> c) {
  struct open_count {
    std::shared_ptr<std::atomic<std::size_t>> n;
    explicit open_count(std::shared_ptr<std::atomic<std::size_t>> count) : n(std::move(count)) {
      ++*n;
    }
    ~open_count() { --*n; }
    open_count(const open_count&) = delete;
    open_count& operator=(const open_count&) = delete;
  } counted(open_);

  std::vector<char> buf(16 * 1024);
  std::string pending;  // bytes after the previous request (pipelining)
  std::string remote;
  {
    std::error_code ec;
    const auto ep = c->socket.remote_endpoint(ec);
    if (!ec) remote = ep.address().to_string() + ":" + std::to_string(ep.port());
  }

  if (open_->load() > limits_.max_connections) {
    {
      const json detail = json{{"limit", "MAX_CONNECTIONS"}, {"value", limits_.max_connections}};
      co_await send_error_and_close(*c, 503, "too many connections", detail);
    }
    co_return;
  }

  try {
    for (;;) {
      parse_state st;
      st.max_header_bytes = limits_.max_header_bytes;
      st.max_body_bytes = limits_.max_body_bytes;
      st.req.remote = remote;
      http_parser parser{};
      http_parser_init(&parser, HTTP_REQUEST);
      parser.data = &st;

      c->expire_at(clock::now() +
                   (pending.empty() ? limits_.idle_timeout : limits_.request_timeout));
      bool partial = false;
      while (!st.complete) {
        std::string chunk;
        std::string_view data;
        if (!pending.empty()) {
          chunk = std::move(pending);
          pending.clear();
          data = chunk;
        } else {
          std::error_code ec;
          const std::size_t n = co_await c->socket.async_read_some(
              asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
          if (ec) {
            // Timed out (the watchdog closed the socket), closed by the client, or
            // closed by stop().
            c->close();
            co_return;
          }
          data = std::string_view(buf.data(), n);
        }
        const std::size_t used =
            http_parser_execute(&parser, &parser_settings(), data.data(), data.size());
        const auto err = HTTP_PARSER_ERRNO(&parser);
        if (err == HPE_PAUSED) {
          http_parser_pause(&parser, 0);
          pending.assign(data.substr(used));
          break;
        }
        if (st.headers_too_large || err == HPE_HEADER_OVERFLOW) {
          {
            const json detail = json{{"limit_bytes", limits_.max_header_bytes}};
            co_await send_error_and_close(*c, 431, "request headers too large", detail);
          }
          co_return;
        }
        if (st.body_too_large) {
          {
            const json detail = json{{"limit_bytes", limits_.max_body_bytes}};
            co_await send_error_and_close(*c, 413, "request body too large", detail);
          }
          co_return;
        }
        if (err != HPE_OK) {
          {
            const json detail = json{{"parser", http_errno_description(err)}};
            co_await send_error_and_close(*c, 400, "malformed HTTP request", detail);
          }
          co_return;
        }
        if (parser.upgrade != 0) break;
        if (!partial) {
          // Part of a request: the rest must come within the request timeout.
          partial = true;
          c->expire_at(std::min(c->deadline, clock::now() + limits_.request_timeout));
        }
        if (st.expect_continue) {
          // The client waits for this before it sends the body (RFC 9110 §10.1.1).
          st.expect_continue = false;
          co_await asio::async_write(c->socket, asio::buffer(continue_line), asio::use_awaitable);
        }
      }
      if (!st.complete) {
        co_await send_error_and_close(*c, 400, "malformed HTTP request", nullptr);
        co_return;
      }

      // The path and query, decoded.
      if (const char* problem = split_target(st.req)) {
        const json detail{{"target", st.req.target}};
        co_await send_error_and_close(*c, 400, problem, detail);
        co_return;
      }

      c->busy = true;  // a handler may take its time
      co_await dispatch(*c, st.req);
      c->busy = false;
      if (!st.req.keep_alive || stopping_ || !c->socket.is_open()) {
        c->close();
        co_return;
      }
    }
  } catch (const std::exception&) {
    // The client went away mid-response, or stop() closed the socket.
  }
  c->close();
}

asio::awaitable<void> http_server::dispatch(connection& c, request& req) {
  const auto started = clock::now();
  std::string route;
  int status = 0;
  response r;
  std::size_t index = router::unmatched;
  const handler* h = routes_.find(req, route, index, status);
  if (h == nullptr) {
    r = status == 405 ? error_response(405, "method not allowed",
                                       json{{"method", req.method}, {"path", req.path}})
                      : error_response(404, "no such endpoint", json{{"path", req.path}});
  } else {
    try {
      r = co_await (*h)(req);
    } catch (const http_error& e) {
      r = error_response(e.status, e.message, e.detail);
    } catch (const json::exception& e) {
      r = error_response(400, "invalid request", json{{"reason", e.what()}});
    } catch (const std::exception& e) {
      r = error_response(500, "internal error", json{{"reason", e.what()}});
    }
  }
  const bool keep_alive = req.keep_alive && !stopping_;
  req.keep_alive = keep_alive;
  if (r.upgrade) {
    const std::string head = response_head(r, true, false);
    co_await asio::async_write(c.socket, asio::buffer(head), asio::use_awaitable);
    if (observe_) {
      observe_(req.method, route, index, r.status,
               std::chrono::duration<double>(clock::now() - started).count());
    }
    req.keep_alive = false;
    c.upgraded = true;
    co_await r.upgrade(c.socket);
    co_return;
  }
  if (r.stream) {
    const std::string head = response_head(r, keep_alive, true);
    co_await asio::async_write(c.socket, asio::buffer(head), asio::use_awaitable);
    chunk_writer writer(c.socket);
    co_await r.stream(writer);
    co_await asio::async_write(c.socket, asio::buffer("0\r\n\r\n", 5), asio::use_awaitable);
  } else {
    const std::string head = response_head(r, keep_alive, false);
    const std::array<asio::const_buffer, 2> parts{asio::buffer(head), asio::buffer(body_of(r))};
    co_await asio::async_write(c.socket, parts, asio::use_awaitable);
  }
  if (observe_) {
    observe_(req.method, route, index, r.status,
             std::chrono::duration<double>(clock::now() - started).count());
  }
}

}  // namespace server
