// Spawning a child and waiting for it: ptk::spawn against fork + exec, raw
// posix_spawn and Boost.Process v2, from a small parent and from a parent with
// 1 GiB of touched memory (where fork must copy page tables and exec must undo it).
#include <ptk/process.hpp>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#if PTK_BENCH_HAVE_BOOST_PROCESS
// GCC 12 at -O3 reports a possible null dereference inside Boost.Asio's io_context
// (pulled in by the peer, Boost.Process), where it is inlined into this file.
#pragma GCC diagnostic ignored "-Wnull-dereference"
// Boost 1.81's Process v2 uses these without including them when it is told to use
// std::filesystem (which spares linking Boost.Filesystem).
#include <boost/optional.hpp>
#include <type_traits>
#define BOOST_PROCESS_USE_STD_FS 1
#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>
#endif

#include "compare.hpp"

extern char** environ;  // NOLINT: POSIX declares it nowhere

namespace {

// Grows this process by `mib` MiB of touched memory for the benchmark's duration.
std::vector<char> ballast(benchmark::State& state) {
  std::vector<char> b(static_cast<std::size_t>(state.range(0)) << 20);
  for (std::size_t i = 0; i < b.size(); i += 4096) b[i] = 1;
  return b;
}

constexpr const char* true_path = "/bin/true";

void BM_spawn_ptk(benchmark::State& state) {
  const auto b = ballast(state);
  const auto cmd = ptk::command{true_path};
  for (auto _ : state) {
    if (!ptk::spawn(cmd).wait().success()) state.SkipWithError("child failed");
  }
}

void BM_spawn_fork_exec(benchmark::State& state) {
  const auto b = ballast(state);
  char* argv[] = {const_cast<char*>(true_path), nullptr};
  for (auto _ : state) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execv(true_path, argv);
      ::_exit(127);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    if (st != 0) state.SkipWithError("child failed");
  }
}

void BM_spawn_posix_spawn(benchmark::State& state) {
  const auto b = ballast(state);
  char* argv[] = {const_cast<char*>(true_path), nullptr};
  for (auto _ : state) {
    pid_t pid = 0;
    if (::posix_spawn(&pid, true_path, nullptr, nullptr, argv, environ) != 0) {
      state.SkipWithError("posix_spawn failed");
      break;
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
  }
}

#if PTK_BENCH_HAVE_BOOST_PROCESS
void BM_spawn_boost_process(benchmark::State& state) {
  const auto b = ballast(state);
  boost::asio::io_context ctx;
  for (auto _ : state) {
    boost::process::v2::process p(ctx, true_path, {});
    if (p.wait() != 0) state.SkipWithError("child failed");
  }
}
#endif

}  // namespace

BENCHMARK(BM_spawn_ptk)
    ->Name("BM_spawn_wait_true/ptk")
    ->Arg(0)
    ->Arg(1024)
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
