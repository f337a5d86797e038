// Spawning a child and waiting for it: ptk::spawn (both of its backends) against
// fork + exec, raw posix_spawn and Boost.Process v2, from a small parent and from a parent with
// 1 GiB of touched memory (where fork must copy page tables and exec must undo it).
// The spawn rows compare median times per spawn (the "metric" counter). On a busy
// machine, run with --benchmark_repetitions=9 --benchmark_enable_random_interleaving=true
// --benchmark_min_time=0.1: the table then compares medians over interleaved slices.
#include <ptk/process.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#if PTK_BENCH_HAVE_BOOST_PROCESS
// Boost 1.81's Process v2 uses these without including them when it is told to use
// std::filesystem (which spares linking Boost.Filesystem).
#include <boost/optional.hpp>
#include <type_traits>
#define BOOST_PROCESS_USE_STD_FS 1
#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>
#endif

#include "compare.hpp"

// environ: declared by <unistd.h> (g++ and clang++ with libstdc++ define _GNU_SOURCE).

namespace {

// Grows this process by `mib` MiB of touched memory for the benchmark's duration.
std::vector<char> ballast(benchmark::State& state) {
  std::vector<char> b(static_cast<std::size_t>(state.range(0)) << 20);
  for (std::size_t i = 0; i < b.size(); i += 4096) b[i] = 1;
  return b;
}

// Per-iteration times of one spawn benchmark, reported as the "metric" counter: their
// median, in ns, which the ratio table then compares. On a small VM shared with other
// work a few preempted iterations dominate a mean; the median shows the spawn itself.
class median_clock {
 public:
  explicit median_clock(benchmark::State& state) : state_(state) { times_.reserve(1 << 14); }
  median_clock(const median_clock&) = delete;
  median_clock& operator=(const median_clock&) = delete;
  ~median_clock() {
    if (times_.empty()) return;
    const auto mid = times_.begin() + static_cast<std::ptrdiff_t>(times_.size() / 2);
    std::nth_element(times_.begin(), mid, times_.end());
    state_.counters["metric"] = *mid;
  }
  template <class F>
  void time(F&& f) {
    const auto start = std::chrono::steady_clock::now();
    f();
    times_.push_back(
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count());
  }

 private:
  benchmark::State& state_;
  std::vector<double> times_;
};

double median_of(std::vector<double>& v) {
  if (v.empty()) return 0;
  const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  return *mid;
}

template <class F>
double time_ns(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
}

// A statically linked program that exits at once (built next to this benchmark), so
// exec costs little and the spawn itself shows; /bin/true where it was not built.
#ifdef PTK_BENCH_TINY_STATIC
constexpr const char* true_path = PTK_BENCH_TINY_STATIC;
#else
constexpr const char* true_path = "/bin/true";
#endif

void BM_spawn_ptk(benchmark::State& state) {
  const auto b = ballast(state);
  const auto cmd = ptk::command{true_path};
  median_clock clock(state);
  for (auto _ : state) {
    clock.time([&] {
      if (!ptk::spawn(cmd).wait().success()) state.SkipWithError("child failed");
    });
  }
}

// The same spawn through ptk's fallback backend (posix_spawn + pidfd_open).
void BM_spawn_ptk_posix_spawn_backend(benchmark::State& state) {
  const auto b = ballast(state);
  const auto cmd = ptk::command{true_path};
  auto& backend = ptk::detail::spawn_backend_state();
  const auto saved = backend.load();
  backend.store(ptk::detail::spawn_backend_kind::posix_spawn);
  {
    median_clock clock(state);
    for (auto _ : state) {
      clock.time([&] {
        if (!ptk::spawn(cmd).wait().success()) state.SkipWithError("child failed");
      });
    }
  }
  backend.store(saved);
}

// ptk from a 1 GiB parent against ptk from a small one: the cost must not grow with
// the parent's memory.
template <int MiB>
void BM_spawn_parent_size(benchmark::State& state) {
  std::vector<char> b(static_cast<std::size_t>(MiB) << 20);
  for (std::size_t i = 0; i < b.size(); i += 4096) b[i] = 1;
  const auto cmd = ptk::command{true_path};
  median_clock clock(state);
  for (auto _ : state) {
    clock.time([&] {
      if (!ptk::spawn(cmd).wait().success()) state.SkipWithError("child failed");
    });
  }
}

void BM_spawn_fork_exec(benchmark::State& state) {
  const auto b = ballast(state);
  char* argv[] = {const_cast<char*>(true_path), nullptr};
  median_clock clock(state);
  for (auto _ : state) {
    clock.time([&] {
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::execv(true_path, argv);
        ::_exit(127);
      }
      int st = 0;
      ::waitpid(pid, &st, 0);
      if (st != 0) state.SkipWithError("child failed");
    });
  }
}

void BM_spawn_posix_spawn(benchmark::State& state) {
  const auto b = ballast(state);
  char* argv[] = {const_cast<char*>(true_path), nullptr};
  median_clock clock(state);
  for (auto _ : state) {
    clock.time([&] {
      pid_t pid = 0;
      if (::posix_spawn(&pid, true_path, nullptr, nullptr, argv, environ) != 0) {
        state.SkipWithError("posix_spawn failed");
        return;
      }
      int st = 0;
      ::waitpid(pid, &st, 0);
    });
  }
}

#if PTK_BENCH_HAVE_BOOST_PROCESS
void BM_spawn_boost_process(benchmark::State& state) {
  const auto b = ballast(state);
  boost::asio::io_context ctx;
  median_clock clock(state);
  for (auto _ : state) {
    clock.time([&] {
      boost::process::v2::process p(ctx, true_path, {});
      if (p.wait() != 0) state.SkipWithError("child failed");
    });
  }
}
#endif

// --- the same spawn with RLIMIT_NOFILE raised as far as this machine allows ----------
// (ptk closes inherited descriptors with close_range, whose cost does not depend on
// the limit; a loop over every possible descriptor would.) Raised and default limits
// alternate from one spawn to the next, so both see the same machine load.

void BM_spawn_high_nofile(benchmark::State& state) {
  rlimit old{};
  ::getrlimit(RLIMIT_NOFILE, &old);
  // The hard limit against the usual default soft limit of 1024 (whatever this
  // session's soft limit happens to be).
  const rlimit high{old.rlim_max, old.rlim_max};
  const rlimit usual{std::min<rlim_t>(1024, old.rlim_max), old.rlim_max};
  state.counters["nofile"] = static_cast<double>(high.rlim_cur);
  state.counters["nofile_default"] = static_cast<double>(usual.rlim_cur);
  const auto cmd = ptk::command{true_path};
  std::vector<double> raised, normal;
  for (auto _ : state) {
    ::setrlimit(RLIMIT_NOFILE, &high);
    raised.push_back(time_ns([&] { ptk::spawn(cmd).wait(); }));
    ::setrlimit(RLIMIT_NOFILE, &usual);
    normal.push_back(time_ns([&] { ptk::spawn(cmd).wait(); }));
  }
  ::setrlimit(RLIMIT_NOFILE, &old);
  state.counters["metric"] = median_of(raised);
  state.counters["peer:default_limit"] = median_of(normal);
}

// --- capturing 100 MB of output ---------------------------------------------------

constexpr const char* hundred_mb = "head -c 100000000 /dev/zero";

// The floor: posix_spawn with stdout on a pipe, and a plain read loop into a string.
std::size_t raw_capture() {
  char* argv[] = {const_cast<char*>("sh"), const_cast<char*>("-c"), const_cast<char*>(hundred_mb),
                  nullptr};
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return 0;
  posix_spawn_file_actions_t fa;
  ::posix_spawn_file_actions_init(&fa);
  ::posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  pid_t pid = 0;
  ::posix_spawnp(&pid, "sh", &fa, nullptr, argv, environ);
  ::posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  return out.size();
}

// ptk::run and the raw loop in turn; the table compares their median times.
void BM_capture(benchmark::State& state) {
  std::vector<double> ptk_times, raw_times;
  for (auto _ : state) {
    ptk_times.push_back(time_ns([&] {
      if (ptk::run({"sh", "-c", hundred_mb}).out.size() != 100000000) {
        state.SkipWithError("short output");
      }
    }));
    raw_times.push_back(time_ns([&] {
      if (raw_capture() != 100000000) state.SkipWithError("short output");
    }));
  }
  state.counters["metric"] = median_of(ptk_times);
  state.counters["peer:raw_pipe_read"] = median_of(raw_times);
  state.counters["ptk_MB_per_s"] = 100000000 / median_of(ptk_times) * 1e9 / 1e6;
  state.counters["raw_MB_per_s"] = 100000000 / median_of(raw_times) * 1e9 / 1e6;
}

// --- spawn against raw posix_spawn, and throughput from one thread and from two, ------
// --- with the implementations interleaved ---------------------------------------------
// One loop alternates ptk (clone3), ptk's posix_spawn backend and raw posix_spawn, so
// all see the same load at the same moments; each reports its median per spawn (the
// peers as "peer:" counters, which the ratio table turns into rows).

void BM_spawn_interleaved(benchmark::State& state) {
  const auto b = ballast(state);
  const auto cmd = ptk::command{true_path};
  char* argv[] = {const_cast<char*>(true_path), nullptr};
  auto& backend = ptk::detail::spawn_backend_state();
  const auto saved = backend.load();
  std::vector<double> clone3, fallback, raw;
  for (auto _ : state) {
    clone3.push_back(time_ns([&] { ptk::spawn(cmd).wait(); }));
    backend.store(ptk::detail::spawn_backend_kind::posix_spawn);
    fallback.push_back(time_ns([&] { ptk::spawn(cmd).wait(); }));
    backend.store(saved);
    raw.push_back(time_ns([&] {
      pid_t pid = 0;
      if (::posix_spawn(&pid, true_path, nullptr, nullptr, argv, environ) != 0) return;
      int st = 0;
      ::waitpid(pid, &st, 0);
    }));
  }
  state.counters["metric"] = median_of(clone3);
  state.counters["peer:ptk_posix_spawn_backend"] = median_of(fallback);
  state.counters["peer:posix_spawn"] = median_of(raw);
}

// 100 spawns from two threads, then 100 from one thread, then 100 raw posix_spawn from
// two threads, in turn; the table compares the batches' median times (throughput is
// the inverse: a ratio of 0.5 means twice the spawns per second).
void BM_spawn_batches_interleaved(benchmark::State& state) {
  constexpr int batch = 100;
  const auto cmd = ptk::command{true_path};
  char* argv[] = {const_cast<char*>(true_path), nullptr};
  const auto in_threads = [](int threads, const auto& spawn_one) {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (int i = 0; i < batch / threads; ++i) spawn_one();
      });
    }
    for (auto& t : pool) t.join();
  };
  const auto ptk_one = [&] { ptk::spawn(cmd).wait(); };
  const auto raw_one = [&] {
    pid_t pid = 0;
    if (::posix_spawn(&pid, true_path, nullptr, nullptr, argv, environ) != 0) return;
    int st = 0;
    ::waitpid(pid, &st, 0);
  };
  std::vector<double> two, one, raw_two;
  for (auto _ : state) {
    two.push_back(time_ns([&] { in_threads(2, ptk_one); }));
    one.push_back(time_ns([&] { in_threads(1, ptk_one); }));
    raw_two.push_back(time_ns([&] { in_threads(2, raw_one); }));
  }
  state.counters["metric"] = median_of(two);
  state.counters["peer:1_thread"] = median_of(one);
  state.counters["peer:posix_spawn_2_threads"] = median_of(raw_two);
}

}  // namespace

BENCHMARK(BM_spawn_interleaved)
    ->Name("BM_spawn_wait_interleaved/ptk")
    ->Arg(0)
    ->Arg(1024)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_spawn_batches_interleaved)
    ->Name("BM_spawn_100/ptk_2_threads")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_spawn_high_nofile)
    ->Name("BM_spawn_nofile_limit/ptk_raised_limit")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_capture)
    ->Name("BM_capture_100MB/ptk_run")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK(BM_spawn_ptk)
    ->Name("BM_spawn_wait_true/ptk")
    ->Arg(0)
    ->Arg(1024)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_spawn_ptk_posix_spawn_backend)
    ->Name("BM_spawn_wait_true/ptk_posix_spawn_backend")
    ->Arg(0)
    ->Arg(1024)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_spawn_parent_size<1024>)
    ->Name("BM_spawn_parent_size/ptk_1GiB_parent")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_spawn_parent_size<0>)
    ->Name("BM_spawn_parent_size/small_parent")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_spawn_fork_exec)
    ->Name("BM_spawn_wait_true/fork_exec")
    ->Arg(0)
    ->Arg(1024)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_spawn_posix_spawn)
    ->Name("BM_spawn_wait_true/posix_spawn")
    ->Arg(0)
    ->Arg(1024)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
#if PTK_BENCH_HAVE_BOOST_PROCESS
BENCHMARK(BM_spawn_boost_process)
    ->Name("BM_spawn_wait_true/boost_process")
    ->Arg(0)
    ->Arg(1024)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
#endif

PTK_BENCHMARK_MAIN()
