#include <ptk/ipc/codec.hpp>
#include <ptk/ipc/shared_memory.hpp>
#include <ptk/ipc/shared_value.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>
#include <vector>

#include "catch.hpp"
#include "ipc_support.hpp"
#include "test_support.hpp"

using namespace ptk::test;

TEST_CASE("shared_memory: create, open, names, limits and cleanup", "[ipc][shm]") {
  using Catch::Matchers::Contains;
  const shm_name name;
  const int fds = open_fd_count();
  {
    auto seg = ptk::shared_memory::create(name, 4096);
    CHECK(seg.size() == 4096);
    CHECK(seg.name() == "/" + name.str());
    CHECK(seg.owns_name());
    std::memcpy(seg.data(), "hello", 6);
    auto peer = ptk::shared_memory::open(name);
    CHECK(std::string(reinterpret_cast<const char*>(peer.data())) == "hello");
    CHECK_THROWS_WITH(ptk::shared_memory::create(name, 4096), Contains("File exists"));
    struct stat st {};
    REQUIRE(::fstat(seg.fd(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(ptk::detail::is_cloexec(seg.fd()));
  }
  CHECK_FALSE(shm_exists(name));
  CHECK(open_fd_count() == fds);

  CHECK_THROWS_AS(ptk::shared_memory::create("bad/name", 10), std::invalid_argument);
  CHECK_THROWS_AS(ptk::shared_memory::create("", 10), std::invalid_argument);
  CHECK_THROWS_AS(ptk::shared_memory::create(name, 0), std::invalid_argument);
  // More than tmpfs can hold: an error now, not a SIGBUS later, and no name left behind.
  CHECK_THROWS_WITH(ptk::shared_memory::create(name, std::size_t{1} << 50), Contains("reserve"));
  CHECK_FALSE(shm_exists(name));
  CHECK(open_fd_count() == fds);

  {
    auto kept = ptk::shared_memory::create(name, 64);
    kept.keep();
  }
  CHECK(shm_exists(name));
  CHECK(ptk::shared_memory::remove(name));
  CHECK_FALSE(ptk::shared_memory::remove(name));
}

TEST_CASE("shared_memory: anonymous segments are sealed; unsealed memfds are refused",
          "[ipc][shm]") {
  using Catch::Matchers::Contains;
  auto seg = ptk::shared_memory::anonymous(8192);
  CHECK(seg.name().empty());
  CHECK(::ftruncate(seg.fd(), 100) == -1);  // sealed against shrinking
  CHECK(errno == EPERM);
  auto again = ptk::shared_memory::from_fd(::dup(seg.fd()));
  CHECK(again.size() == 8192);

  const int raw = ::memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  REQUIRE(::ftruncate(raw, 4096) == 0);
  CHECK_THROWS_WITH(ptk::shared_memory::from_fd(raw), Contains("not sealed"));
}

TEST_CASE("shared_value: atomic updates from several processes", "[ipc][shared_value]") {
  const shm_name name;
  auto counter = ptk::shared_value<long>::create(name, 100);
  std::vector<pid_t> kids;
  for (int k = 0; k < 3; ++k) {
    kids.push_back(fork_child([&] {
      auto c = ptk::shared_value<long>::open(name.str());
      for (int i = 0; i < 10000; ++i) c.fetch_add(1);
      return 0;
    }));
  }
  for (int i = 0; i < 10000; ++i) counter.fetch_add(1);
  for (auto k : kids) CHECK(wait_exit_code(k) == 0);
  CHECK(counter.load() == 100 + 4 * 10000);
  long expected = counter.load();
  CHECK(counter.compare_exchange(expected, 7));
  CHECK(counter.exchange(8) == 7);
  CHECK(counter.update([](long& v) { return v += 2; }) == 10);
  CHECK(counter.load() == 10);
  CHECK_THROWS_WITH(ptk::shared_value<int>::open(name),
                    Catch::Matchers::Contains("created for type 'long"));
}

TEST_CASE("shared_value: locked updates of a large value; a killed updater changes nothing",
          "[ipc][shared_value]") {
  struct account {
    long balance[2];
    std::array<char, 200> note;
  };
  auto acc = ptk::shared_value<account>::anonymous(account{{500, 500}, {}});
  const int fd = acc.fd();
  std::vector<pid_t> kids;
  for (int k = 0; k < 2; ++k) {
    kids.push_back(fork_child([fd, k] {
      auto a = ptk::shared_value<account>::from_fd(::dup(fd));
      for (int i = 0; i < 2000; ++i) {
        a.update([k](account& x) {  // move money: the sum must stay 1000
          x.balance[k] -= 1;
          x.balance[1 - k] += 1;
        });
      }
      return 0;
    }));
  }
  for (int i = 0; i < 2000; ++i) {
    const account now = acc.load();
    REQUIRE(now.balance[0] + now.balance[1] == 1000);
  }
  for (auto k : kids) CHECK(wait_exit_code(k) == 0);

  const pid_t dies = fork_child([fd] {
    auto a = ptk::shared_value<account>::from_fd(::dup(fd));
    a.update([](account& x) {
      x.balance[0] = -1;  // on the copy: never committed
      ::kill(::getpid(), SIGKILL);
    });
    return 0;
  });
  int status = 0;
  ::waitpid(dies, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  const account after = acc.load();  // takes the lock over from the dead process
  CHECK(after.balance[0] + after.balance[1] == 1000);
  CHECK(after.balance[0] >= 0);
}

TEST_CASE("shared_array: elements, atomics and the lock across processes", "[ipc][shared_array]") {
  const shm_name name;
  auto arr = ptk::shared_array<std::uint32_t>::create(name, 16);
  CHECK(arr.size() == 16);
  for (auto v : arr.span()) CHECK(v == 0);
  std::vector<pid_t> kids;
  for (std::size_t k = 0; k < 2; ++k) {
    kids.push_back(fork_child([&, k] {
      auto a = ptk::shared_array<std::uint32_t>::open(name.str());
      for (std::size_t i = k; i < 15; i += 2)
        a[i] = static_cast<std::uint32_t>(i * 10);  // one writer each
      for (int i = 0; i < 1000; ++i) a.atomic(15).fetch_add(1);
      return 0;
    }));
  }
  for (auto k : kids) CHECK(wait_exit_code(k) == 0);
  for (std::size_t i = 0; i < 15; ++i) CHECK(arr[i] == i * 10);
  CHECK(arr[15] == 2000);
  const auto sum = arr.with_lock([](std::span<std::uint32_t> all) {
    std::uint32_t s = 0;
    for (auto v : all) s += v;
    return s;
  });
  CHECK(sum == 1050 + 2000);
  CHECK_THROWS_AS(arr.atomic(16), std::out_of_range);
}

namespace {
struct plain {
  int a;
  double b;
};
struct has_string {
  std::string s;
};
}  // namespace

TEST_CASE("codec: round trips and malformed input", "[ipc][codec]") {
  static_assert(ptk::encodable<int>);
  static_assert(ptk::encodable<plain>);
  static_assert(ptk::encodable<std::string>);
  static_assert(ptk::encodable<std::vector<std::string>>);
  static_assert(!ptk::encodable<int*>);
  static_assert(!ptk::encodable<has_string>);
  static_assert(!ptk::encodable<std::vector<has_string>>);
  static_assert(ptk::fixed_size_encodable<plain>);
  static_assert(!ptk::fixed_size_encodable<std::string>);

  auto round = [](const auto& v) {
    using T = std::remove_cvref_t<decltype(v)>;
    std::vector<std::byte> buf(ptk::codec<T>::encoded_size(v));
    ptk::codec<T>::encode(v, buf);
    return ptk::codec<T>::decode(buf);
  };
  CHECK(round(std::string("héllo")) == "héllo");
  CHECK(round(std::string()).empty());
  const std::vector<std::string> words{"a", "", "ccc"};
  CHECK(round(words) == words);
  const std::vector<std::vector<int>> nested{{1, 2}, {}, {3}};
  CHECK(round(nested) == nested);
  const plain p = round(plain{3, 2.5});
  CHECK(p.a == 3);
  CHECK(p.b == 2.5);

  using Catch::Matchers::Contains;
  const std::byte three[3]{};
  CHECK_THROWS_WITH(ptk::codec<int>::decode(three), Contains("expected 4 bytes, got 3"));
  CHECK_THROWS_WITH(ptk::codec<std::vector<int>>::decode(three), Contains("whole number"));
  std::vector<std::byte> lie(16);
  const std::uint64_t count = 1ULL << 40;
  std::memcpy(lie.data(), &count, 8);
  CHECK_THROWS_WITH(ptk::codec<std::vector<std::string>>::decode(lie), Contains("count too large"));
  const std::uint64_t one = 1, len = 100;
  std::memcpy(lie.data(), &one, 8);
  std::memcpy(lie.data() + 8, &len, 8);
  CHECK_THROWS_WITH(ptk::codec<std::vector<std::string>>::decode(lie),
                    Contains("longer than the message"));
}
