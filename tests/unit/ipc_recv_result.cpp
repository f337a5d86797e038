#include <ptk/ipc/channel.hpp>
#include <ptk/ipc/pipe.hpp>
#include <ptk/ipc/queue.hpp>
#include <ptk/ipc/shm_ring.hpp>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>

#include "catch.hpp"

using ptk::channel_status;
using ptk::recv_result;

namespace {

// A message that counts how often it is copied and moved.
struct tracked {
  static inline int copies = 0;
  static inline int moves = 0;
  std::uint64_t id = 0;
  explicit tracked(std::uint64_t i) : id(i) {}
  tracked(const tracked& o) : id(o.id) { ++copies; }
  tracked(tracked&& o) noexcept : id(o.id) { ++moves; }
  tracked& operator=(const tracked&) = delete;
  tracked& operator=(tracked&&) = delete;
  ~tracked() = default;
  static void reset() { copies = moves = 0; }
};

}  // namespace

template <>
struct ptk::codec<tracked> {
  static std::size_t encoded_size(const tracked&) noexcept { return sizeof(std::uint64_t); }
  static void encode(const tracked& t, std::span<std::byte> out) noexcept {
    std::memcpy(out.data(), &t.id, sizeof t.id);
  }
  static tracked decode(std::span<const std::byte> in) {
    if (in.size() != sizeof(std::uint64_t)) throw ptk::codec_error("tracked: wrong size");
    std::uint64_t id = 0;
    std::memcpy(&id, in.data(), sizeof id);
    return tracked(id);
  }
};

TEST_CASE("recv_result: a value or a status, copied, moved and assigned", "[ipc][recv_result]") {
  const std::string big(100, 'x');  // on the heap: a leak or a double free shows under ASan
  recv_result<std::string> v = big;
  recv_result<std::string> none = channel_status::closed;
  CHECK(v);
  CHECK(v.status() == channel_status::ok);
  CHECK(*v == big);
  CHECK(v->size() == 100);
  CHECK_FALSE(none);
  CHECK(none.status() == channel_status::closed);
  CHECK_THROWS_AS(none.value(), ptk::channel_error);
  try {
    (void)none.value();
  } catch (const ptk::channel_error& e) {
    CHECK(e.status() == channel_status::closed);
  }

  recv_result<std::string> copy = v;
  CHECK(*copy == big);
  CHECK(*v == big);
  recv_result<std::string> moved = std::move(copy);
  CHECK(*moved == big);

  recv_result<std::string> target = channel_status::empty;
  target = v;  // no value <- value
  CHECK(*target == big);
  target = recv_result<std::string>(std::string("short"));  // value <- value
  CHECK(*target == "short");
  target = none;  // value <- no value
  CHECK_FALSE(target);
  CHECK(target.status() == channel_status::closed);
  target = std::move(moved);  // no value <- value, moved
  CHECK(*target == big);
  auto& self = target;
  target = self;
  CHECK(*target == big);
  CHECK(std::move(target).value() == big);
}

TEST_CASE("recv_result: a shm_ring, a pipe and a queue decode into the result, no copy",
          "[ipc][recv_result]") {
  SECTION("shm_ring") {
    auto ring = ptk::shm_ring<tracked>::anonymous(256);
    REQUIRE(ring.send(tracked(7)) == channel_status::ok);
    REQUIRE(ring.send(tracked(8)) == channel_status::ok);
    tracked::reset();
    auto r = ring.recv();
    REQUIRE(r);
    CHECK(r->id == 7);
    auto t = ring.try_recv();
    REQUIRE(t);
    CHECK(t->id == 8);
    CHECK(tracked::copies == 0);
    CHECK(tracked::moves == 0);
  }
  SECTION("pipe") {
    auto [a, b] = ptk::pipe<tracked>::create();
    REQUIRE(a.send(tracked(9)) == channel_status::ok);
    tracked::reset();
    auto r = b.recv();
    REQUIRE(r);
    CHECK(r->id == 9);
    CHECK(tracked::copies == 0);
    CHECK(tracked::moves == 0);
  }
  SECTION("queue") {
    ptk::queue<tracked> q{4, {.max_message_size = sizeof(std::uint64_t)}};
    REQUIRE(q.send(tracked(10)) == channel_status::ok);
    tracked::reset();
    auto r = q.recv();
    REQUIRE(r);
    CHECK(r->id == 10);
    CHECK(tracked::copies == 0);
    CHECK(tracked::moves <= 1);  // out of the loop that found the message
  }
}
