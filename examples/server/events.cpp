#include "events.hpp"

#include <ptk/ipc_asio.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/strand.hpp>
#include <asio/write.hpp>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <wslay/wslay.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>

namespace server {

namespace {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

bool header_has_token(std::string_view value, std::string_view token) {
  // Comma-separated, case-insensitive ("keep-alive, Upgrade").
  while (!value.empty()) {
    const std::size_t comma = std::min(value.find(','), value.size());
    std::string_view item = value.substr(0, comma);
    value.remove_prefix(std::min(comma + 1, value.size()));
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item.size() == token.size() &&
        std::equal(item.begin(), item.end(), token.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return true;
    }
  }
  return false;
}

std::string accept_key(std::string_view key) {
  static constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string input(key);
  input += guid;
  std::array<unsigned char, SHA_DIGEST_LENGTH> digest{};
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest.data());
  std::array<unsigned char, 4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1> out{};
  const int n = EVP_EncodeBlock(out.data(), digest.data(), SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<const char*>(out.data()), static_cast<std::size_t>(n));
}

bool valid_client_key(std::string_view key) {
  // base64 of 16 bytes: 24 characters ending in "==".
  if (key.size() != 24 || key.substr(22) != "==") return false;
  std::array<unsigned char, 24> decoded{};
  return EVP_DecodeBlock(decoded.data(), reinterpret_cast<const unsigned char*>(key.data()), 24) ==
         18;
}

// One WebSocket connection: wslay parses and builds frames; this moves the bytes.
class ws_session {
 public:
  ws_session(tcp::socket& s, event_hub& hub) : socket_(s), hub_(hub), sub_(hub.subscribe()) {
    wslay_event_callbacks callbacks{};
    callbacks.recv_callback = [](wslay_event_context_ptr ctx, std::uint8_t* buf, std::size_t len,
                                 int, void* user) -> ssize_t {
      auto& self = *static_cast<ws_session*>(user);
      const std::size_t avail = self.in_.size() - self.in_pos_;
      if (avail == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
      }
      const std::size_t n = std::min(avail, len);
      std::memcpy(buf, self.in_.data() + self.in_pos_, n);
      self.in_pos_ += n;
      return static_cast<ssize_t>(n);
    };
    callbacks.send_callback = [](wslay_event_context_ptr, const std::uint8_t* data, std::size_t len,
                                 int, void* user) -> ssize_t {
      static_cast<ws_session*>(user)->out_.append(reinterpret_cast<const char*>(data), len);
      return static_cast<ssize_t>(len);
    };
    callbacks.on_msg_recv_callback = [](wslay_event_context_ptr,
                                        const wslay_event_on_msg_recv_arg* arg, void* user) {
      static_cast<ws_session*>(user)->on_message(*arg);
    };
    if (wslay_event_context_server_init(&ctx_, &callbacks, this) != 0) {
      throw std::runtime_error("wslay: out of memory");
    }
    wslay_event_config_set_max_recv_msg_length(ctx_, 64 * 1024);
  }
  ~ws_session() {
    hub_.unsubscribe(sub_);
    wslay_event_context_free(ctx_);
  }
  ws_session(const ws_session&) = delete;
  ws_session& operator=(const ws_session&) = delete;

  asio::awaitable<void> run() {
    using namespace asio::experimental::awaitable_operators;
    send_text(nlohmann::json{
        {"type", "hello"},
        {"time", unix_now()},
        {"events",
         {"process.started", "process.exited", "thread.started", "thread.finished", "job.done"}}}
                  .dump());
    co_await (reader() || writer());
  }

 private:
  void send_text(const std::string& text) {
    wslay_event_msg msg{WSLAY_TEXT_FRAME, reinterpret_cast<const std::uint8_t*>(text.data()),
                        text.size()};
    wslay_event_queue_msg(ctx_, &msg);
  }

  void on_message(const wslay_event_on_msg_recv_arg& arg) {
    if (arg.opcode != WSLAY_TEXT_FRAME) return;  // control frames: wslay answers them
    const std::string_view text(reinterpret_cast<const char*>(arg.msg), arg.msg_length);
    const auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_object() && j.value("type", "") == "ping") {
      send_text(nlohmann::json{{"type", "pong"}, {"time", unix_now()}}.dump());
    } else {
      send_text(
          nlohmann::json{{"type", "error"}, {"message", R"(unknown message; send {"type":"ping"})"}}
              .dump());
    }
  }

  asio::awaitable<void> reader() {
    std::array<char, 4096> buf;
    for (;;) {
      const std::size_t n =
          co_await socket_.async_read_some(asio::buffer(buf), asio::use_awaitable);
      in_.erase(0, in_pos_);
      in_pos_ = 0;
      in_.append(buf.data(), n);
      if (wslay_event_recv(ctx_) != 0) co_return;  // a protocol error: wslay queued a close
      sub_->wake.notify();                         // replies (pong, close) to send
      if (wslay_event_want_read(ctx_) == 0) {
        // The client's close frame arrived: wait for the writer to send ours.
        co_await closed_.wait(closed_.version());
        co_return;
      }
    }
  }

  asio::awaitable<void> writer() {
    bool closing = false;
    for (;;) {
      const std::uint64_t seen = sub_->wake.version();
      std::deque<std::string> batch;
      {
        const std::lock_guard lock(sub_->mutex);
        batch.swap(sub_->outbox);
      }
      for (const auto& text : batch) send_text(text);
      if (hub_.stopped() && !closing) {
        closing = true;
        wslay_event_queue_close(ctx_, WSLAY_CODE_GOING_AWAY, nullptr, 0);
      }
      if (wslay_event_send(ctx_) != 0) co_return;
      if (!out_.empty()) {
        std::string data;
        data.swap(out_);
        co_await asio::async_write(socket_, asio::buffer(data), asio::use_awaitable);
      }
      if (wslay_event_get_close_sent(ctx_) != 0 && wslay_event_want_write(ctx_) == 0) {
        closed_.notify();
        if (wslay_event_get_close_received(ctx_) != 0 || closing) co_return;
      }
      co_await sub_->wake.wait(seen);
    }
  }

  tcp::socket& socket_;
  event_hub& hub_;
  std::shared_ptr<subscriber> sub_;
  wslay_event_context_ptr ctx_ = nullptr;
  std::string in_;
  std::size_t in_pos_ = 0;
  std::string out_;
  notifier closed_;
};

}  // namespace

event_hub::event_hub(asio::io_context& io)
    : io_(io), queue_(1024, ptk::queue_options{.max_message_size = 8192}) {}

void event_hub::publish(std::string type, nlohmann::json fields) {
  fields["type"] = std::move(type);
  fields["time"] = unix_now();
  published_.fetch_add(1, std::memory_order_relaxed);
  if (queue_.try_send(to_text(fields)) != ptk::channel_status::ok) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
}

void event_hub::start() {
  pump_running_ = true;
  asio::co_spawn(asio::make_strand(io_), pump(), [this](const std::exception_ptr&) {
    pump_running_ = false;
    pump_ended_.notify();
  });
}

asio::awaitable<void> event_hub::drained(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto seen = pump_ended_.version();
    if (!pump_running_ || std::chrono::steady_clock::now() >= deadline) co_return;
    co_await pump_ended_.wait(seen, deadline);
  }
}

void event_hub::stop() {
  if (stopped_.exchange(true)) return;
  queue_.close();
  stopping.notify();
  const std::lock_guard lock(mutex_);
  for (auto& s : subscribers_) s->wake.notify();
}

asio::awaitable<void> event_hub::pump() {
  for (;;) {
    auto event = co_await ptk::async_recv(queue_, asio::use_awaitable);
    if (!event) co_return;  // closed
    std::vector<std::shared_ptr<subscriber>> subs;
    {
      const std::lock_guard lock(mutex_);
      subs = subscribers_;
    }
    for (auto& s : subs) {
      {
        const std::lock_guard lock(s->mutex);
        if (s->outbox.size() >= subscriber::max_outbox) {
          s->outbox.pop_front();
          ++s->dropped;
          dropped_.fetch_add(1, std::memory_order_relaxed);
        }
        s->outbox.push_back(*event);
      }
      delivered_.fetch_add(1, std::memory_order_relaxed);
      s->wake.notify();
    }
  }
}

std::shared_ptr<subscriber> event_hub::subscribe() {
  auto s = std::make_shared<subscriber>();
  const std::lock_guard lock(mutex_);
  subscribers_.push_back(s);
  return s;
}

void event_hub::unsubscribe(const std::shared_ptr<subscriber>& s) {
  const std::lock_guard lock(mutex_);
  std::erase(subscribers_, s);
}

nlohmann::json event_hub::stats() const {
  std::size_t subs = 0;
  {
    const std::lock_guard lock(mutex_);
    subs = subscribers_.size();
  }
  return {{"published", published_.load()},
          {"delivered", delivered_.load()},
          {"dropped", dropped_.load()},
          {"subscribers", subs},
          {"queue_capacity", queue_.capacity()}};
}

response websocket_upgrade(const request& req, event_hub& hub) {
  if (!header_has_token(req.header("upgrade"), "websocket") ||
      !header_has_token(req.header("connection"), "upgrade")) {
    response r = error_response(426, "this endpoint speaks WebSocket only",
                                nlohmann::json{{"expected", "Upgrade: websocket"}});
    r.headers.emplace_back("Upgrade", "websocket");
    return r;
  }
  if (req.header("sec-websocket-version") != "13") {
    response r =
        error_response(426, "unsupported WebSocket version", nlohmann::json{{"supported", "13"}});
    r.headers.emplace_back("Sec-WebSocket-Version", "13");
    return r;
  }
  const std::string_view key = req.header("sec-websocket-key");
  if (!valid_client_key(key)) {
    return error_response(400, "missing or malformed Sec-WebSocket-Key");
  }
  if (hub.stopped()) return error_response(503, "shutting down");
  response r;
  r.status = 101;
  r.headers = {{"Upgrade", "websocket"},
               {"Connection", "Upgrade"},
               {"Sec-WebSocket-Accept", accept_key(key)}};
  r.upgrade = [&hub](tcp::socket& socket) -> asio::awaitable<void> {
    ws_session session(socket, hub);
    co_await session.run();
  };
  return r;
}

}  // namespace server
