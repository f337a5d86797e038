#include <ptk/detail/unique_fd.hpp>
#include <ptk/thread/sync.hpp>
#include <ptk/thread/thread.hpp>
#include <ptk/thread/thread_info.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <limits>
#include <stop_token>
#include <string>
#include <system_error>

#include "catch.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ptk::scheduler_state;

namespace {

// The kernel's name for thread `tid` of this process, without the trailing newline.
std::string comm_of(pid_t tid) {
  const std::string path = "/proc/self/task/" + std::to_string(tid) + "/comm";
  const ptk::detail::unique_fd fd = ptk::detail::open_fd(path.c_str(), O_RDONLY);
  char buf[64];
  const ssize_t n = ::read(fd.get(), buf, sizeof buf);
  std::string name(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  if (!name.empty() && name.back() == '\n') name.pop_back();
  return name;
}

// A thread body that blocks in a futex until `release` is set or a stop is requested.
auto block_until(ptk::event& release) {
  return [&release](std::stop_token token) { (void)release.wait(std::move(token)); };
}

bool sleeping(pid_t tid) { return ptk::thread_info(tid).state_letter == 'S'; }

}  // namespace

TEST_CASE("this_thread_id is the kernel thread id of the caller") {
  CHECK(ptk::this_thread_id() == ptk::test::current_tid());
  pid_t other = 0;
  ptk::thread t{"tid", [&other] { other = ptk::this_thread_id(); }};
  t.join();
  CHECK(other == t.native_id());
  CHECK(other != ptk::this_thread_id());
}

TEST_CASE("thread_info of the calling thread reports it running, with its name and ids") {
  const ptk::thread_stats s = ptk::thread_info(ptk::this_thread_id());
  CHECK(s.tid == ptk::this_thread_id());
  CHECK(s.pid == ::getpid());
  CHECK(s.name == comm_of(s.tid));
  CHECK(s.state_letter == 'R');  // it is reading its own stat file: it runs
  CHECK(s.state == scheduler_state::running);
  CHECK(s.user_time >= 0ns);
  CHECK(s.system_time >= 0ns);
  CHECK(s.cpu_time() == s.user_time + s.system_time);
  CHECK(s.last_cpu >= 0);
  CHECK(s.last_cpu < ::sysconf(_SC_NPROCESSORS_CONF));
  CHECK(s.nice >= -20);
  CHECK(s.nice <= 19);
  CHECK(s.priority == 20 + s.nice);  // SCHED_OTHER: priority is 20 + nice
}

TEST_CASE("thread_info reports a thread blocked in a futex as sleeping (S)") {
  ptk::event release;
  ptk::thread t{"blocked", block_until(release)};
  const pid_t tid = t.native_id();
  REQUIRE(ptk::test::eventually([&] { return sleeping(tid); }));
  const ptk::thread_stats s = ptk::thread_info(tid);
  CHECK(s.name == "blocked");
  CHECK(s.tid == tid);
  CHECK(s.pid == ::getpid());
  CHECK(s.state == scheduler_state::sleeping);
  CHECK(ptk::to_string(s.state) == "sleeping");
  release.set();
}

TEST_CASE("thread_info shows a spinning thread running and gaining CPU time") {
  ptk::thread spinner{"spinner", [](const std::stop_token& token) {
                        while (!token.stop_requested()) {
                        }
                      }};
  const pid_t tid = spinner.native_id();
  const std::chrono::nanoseconds before = ptk::thread_info(tid).cpu_time();
  bool seen_running = false;
  // CPU time moves in clock ticks (usually 10 ms): poll until it has moved.
  CHECK(ptk::test::eventually([&] {
    const ptk::thread_stats s = ptk::thread_info(tid);
    seen_running = seen_running || s.state_letter == 'R';
    return seen_running && s.cpu_time() > before;
  }));
}  // the destructor stops the spinner

TEST_CASE("thread_info counts a voluntary context switch each time a thread blocks") {
  ptk::event first;
  ptk::event second;
  ptk::thread t{"switcher", [&](const std::stop_token& token) {
                  if (first.wait(token)) (void)second.wait(token);
                }};
  const pid_t tid = t.native_id();
  REQUIRE(ptk::test::eventually([&] { return sleeping(tid); }));
  const std::uint64_t before = ptk::thread_info(tid).voluntary_context_switches;
  first.set();  // it wakes, then blocks again on `second`
  CHECK(ptk::test::eventually([&] {
    const ptk::thread_stats s = ptk::thread_info(tid);
    return s.state_letter == 'S' && s.voluntary_context_switches > before;
  }));
  second.set();
}

TEST_CASE("thread_info reports a thread's nice value and priority") {
  ptk::event niced;
  ptk::event release;
  ptk::thread t{
      "nice", [&](std::stop_token token) {
        // Raising one's own nice value needs no privilege; on Linux the
        // PRIO_PROCESS "who" may be a thread id, and affects only that thread.
        if (::setpriority(PRIO_PROCESS, static_cast<id_t>(ptk::this_thread_id()), 19) == 0) {
          niced.set();
        }
        (void)release.wait(std::move(token));
      }};
  REQUIRE(niced.wait_for(10s));
  const ptk::thread_stats s = ptk::thread_info(t.native_id());
  CHECK(s.nice == 19);
  CHECK(s.priority == 39);
  release.set();
}

TEST_CASE("thread_info reads a name holding spaces and parentheses") {
  // rfind(')') is what keeps this name from being read as fields of stat.
  ptk::event release;
  ptk::thread t{"x) R 1 2 (y)", block_until(release)};
  const pid_t tid = t.native_id();
  REQUIRE(ptk::test::eventually([&] { return sleeping(tid); }));
  const ptk::thread_stats s = ptk::thread_info(tid);
  CHECK(s.name == "x) R 1 2 (y)");
  CHECK(s.state_letter == 'S');
  CHECK(s.tid == tid);
  CHECK(s.priority == 20 + s.nice);
  release.set();
}

TEST_CASE("thread_info of a missing thread throws system_error with ENOENT") {
  const pid_t missing = std::numeric_limits<pid_t>::max();
  try {
    (void)ptk::thread_info(missing);
    FAIL("thread_info of a missing thread returned");
  } catch (const std::system_error& e) {
    CHECK(e.code().value() == ENOENT);
    CHECK(e.code() == std::errc::no_such_file_or_directory);
    CHECK(std::string(e.what()) == "thread_info 2147483647: No such file or directory");
  }
}

TEST_CASE("thread_info of a thread that has exited throws ENOENT") {
  ptk::thread t{"gone", [] {}};
  const pid_t tid = t.native_id();
  t.join();
  // The kernel wakes the joiner a moment before it removes the thread from /proc (as
  // thread_info's docs say): ask until the thread is gone, within a bound.
  int error = 0;
  const bool gone = ptk::test::eventually([&] {
    try {
      (void)ptk::thread_info(tid);
      return false;
    } catch (const std::system_error& e) {
      error = e.code().value();
      return true;
    }
  });
  REQUIRE(gone);  // thread_info of an exited thread no longer answers within 10 s
  CHECK(error == ENOENT);
}

TEST_CASE("thread_info(pid, tid) reads a thread of another process") {
  const std::string our_name = ptk::thread_info(ptk::this_thread_id()).name;
  auto gate = ptk::detail::make_pipe();
  const pid_t child = ::fork();
  REQUIRE(child != -1);
  if (child == 0) {
    // Child: block in read until the parent writes a byte (async-signal-safe only).
    char byte = 0;
    const ssize_t n = ::read(gate.first.get(), &byte, 1);
    ::_exit(n == 1 ? 0 : 1);
  }
  const bool saw_it_sleep = ptk::test::eventually(
      [&] { return ptk::thread_info(child, child).state == scheduler_state::sleeping; });
  const ptk::thread_stats s = ptk::thread_info(child, child);
  const char byte = 1;
  CHECK(::write(gate.second.get(), &byte, 1) == 1);
  CHECK(ptk::test::wait_exit_code(child) == 0);

  CHECK(saw_it_sleep);
  CHECK(s.pid == child);
  CHECK(s.tid == child);
  CHECK(s.name == our_name);  // a forked child inherits the forking thread's name
  try {
    (void)ptk::thread_info(child, child);  // reaped: gone from /proc
    FAIL("thread_info of a reaped process returned");
  } catch (const std::system_error& e) {
    CHECK(e.code().value() == ENOENT);
    const std::string id = std::to_string(child);
    CHECK(std::string(e.what()) ==
          "thread_info " + id + " of process " + id + ": No such file or directory");
  }
}

TEST_CASE("thread_info(pid, tid) of this process matches thread_info(tid)") {
  const ptk::thread_stats s = ptk::thread_info(::getpid(), ptk::this_thread_id());
  CHECK(s.pid == ::getpid());
  CHECK(s.tid == ptk::this_thread_id());
  CHECK(s.name == ptk::thread_info(ptk::this_thread_id()).name);
}

TEST_CASE("thread_info leaves no descriptor open, whether it succeeds or throws") {
  const int before = ptk::test::open_fd_count();
  for (int i = 0; i < 50; ++i) {
    (void)ptk::thread_info(ptk::this_thread_id());
    CHECK_THROWS_AS(ptk::thread_info(std::numeric_limits<pid_t>::max()), std::system_error);
  }
  CHECK(ptk::test::open_fd_count() == before);
}

TEST_CASE("thread_info parses stat lines robustly and rejects malformed ones") {
  // Fields after the name: state, then proc(5) fields 4 to 52; utime (14) is 7 and
  // stime (15) is 3 ticks, priority (18) is -51 (real-time), nice (19) is 0, processor
  // (39) is 1.
  const std::string tail =
      " R 1 1 1 0 -1 4194560 100 0 0 0 7 3 0 0 -51 0 1 0 500 1000 10 1 1 1 1 0 0 0 0 0 0 0 0 0 "
      "17 1 50 1 0 0 0 0 0 0 0 0 0 0 0\n";
  ptk::thread_stats s;
  REQUIRE(ptk::detail::parse_thread_stat("123 (a (b) c) d)" + tail, s));
  CHECK(s.name == "a (b) c) d");
  CHECK(s.state_letter == 'R');
  CHECK(s.state == scheduler_state::running);
  CHECK(s.user_time == ptk::detail::ticks_to_duration(7));
  CHECK(s.system_time == ptk::detail::ticks_to_duration(3));
  CHECK(s.user_time > s.system_time);
  CHECK(s.priority == -51);
  CHECK(s.nice == 0);
  CHECK(s.last_cpu == 1);

  ptk::thread_stats bad;
  CHECK_FALSE(ptk::detail::parse_thread_stat("", bad));
  CHECK_FALSE(ptk::detail::parse_thread_stat("123 no parentheses R 1 2 3", bad));
  CHECK_FALSE(ptk::detail::parse_thread_stat("123 (cut) R 1 1 1 0", bad));
  CHECK_FALSE(
      ptk::detail::parse_thread_stat("123 (x) R 1 1 1 0 -1 4194560 100 0 0 0 seven 3", bad));
  CHECK_FALSE(ptk::detail::parse_thread_stat("123 (x) RR" + tail.substr(2), bad));
}

TEST_CASE("clock ticks convert to nanoseconds without overflow") {
  const auto hz = static_cast<std::uint64_t>(::sysconf(_SC_CLK_TCK));
  CHECK(ptk::detail::ticks_to_duration(0) == 0ns);
  CHECK(ptk::detail::ticks_to_duration(hz) == 1s);
  // A century of CPU time: ticks * 1e9 would overflow 64 bits, the conversion must not.
  const std::uint64_t century = hz * 3600 * 24 * 365 * 100;
  CHECK(ptk::detail::ticks_to_duration(century) == std::chrono::hours(24 * 365 * 100));
}

TEST_CASE("scheduler state letters map to states and readable names") {
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('R') == scheduler_state::running);
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('S') == scheduler_state::sleeping);
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('D') == scheduler_state::disk_sleep);
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('T') == scheduler_state::stopped);
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('t') == scheduler_state::tracing_stop);
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('Z') == scheduler_state::zombie);
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('X') == scheduler_state::dead);
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('x') == scheduler_state::dead);
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('I') == scheduler_state::idle);
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('P') == scheduler_state::parked);
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('W') == scheduler_state::waking);
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('K') == scheduler_state::wakekill);
  STATIC_REQUIRE(ptk::scheduler_state_from_letter('?') == scheduler_state::unknown);
  CHECK(ptk::to_string(scheduler_state::disk_sleep) == "disk sleep");
  CHECK(ptk::to_string(scheduler_state::tracing_stop) == "tracing stop");
  CHECK(ptk::to_string(scheduler_state::zombie) == "zombie");
  CHECK(ptk::to_string(scheduler_state::unknown) == "unknown");
}
