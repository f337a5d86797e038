// Round trip between two processes: the ptk futex wrapper against a pipe.
//
// A child process is forked per benchmark run; parent and child share one page of
// MAP_SHARED memory (futex case) or a pair of pipes (pipe case). One iteration is
// one ping from parent to child and one pong back.
#include <ptk/detail/futex.hpp>
#include <ptk/detail/unique_fd.hpp>

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <new>

#include "compare.hpp"

namespace {

using ptk::detail::futex_word;

struct shared_page {
  futex_word ping{0};
  alignas(64) futex_word pong{0};
};
static_assert(sizeof(shared_page) <= 4096);

shared_page* map_shared_page() {
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  return new (p) shared_page{};
}

// Waits until `word` leaves `seen`, sleeping in the kernel each time it has not.
std::uint32_t wait_change(futex_word& word, std::uint32_t seen) {
  std::uint32_t v;
  while ((v = word.load(std::memory_order_acquire)) == seen) ptk::detail::futex_wait(word, seen);
  return v;
}

constexpr std::uint32_t stop_value = 0xffffffffU;

void BM_process_roundtrip_ptk_futex(benchmark::State& state) {
  shared_page* page = map_shared_page();
  const pid_t child = ::fork();
  if (child == -1) {
    state.SkipWithError("fork failed");
    return;
  }
  if (child == 0) {
    std::uint32_t seen = 0;
    for (;;) {
      seen = wait_change(page->ping, seen);
      if (seen == stop_value) ::_exit(0);
      page->pong.store(seen, std::memory_order_release);
      ptk::detail::futex_wake(page->pong);
    }
  }
  std::uint32_t n = 0;
  for (auto _ : state) {
    page->ping.store(++n, std::memory_order_release);
    ptk::detail::futex_wake(page->ping);
    while (page->pong.load(std::memory_order_acquire) != n)
      ptk::detail::futex_wait(page->pong, n - 1);
  }
  page->ping.store(stop_value, std::memory_order_release);
  ptk::detail::futex_wake(page->ping);
  int status = 0;
  ::waitpid(child, &status, 0);
  ::munmap(page, 4096);
}

void BM_process_roundtrip_pipe(benchmark::State& state) {
  auto to_child = ptk::detail::make_pipe();
  auto to_parent = ptk::detail::make_pipe();
  const pid_t child = ::fork();
  if (child == -1) {
    state.SkipWithError("fork failed");
    return;
  }
  if (child == 0) {
    to_child.second.reset();  // keep only the ends the child uses, so EOF arrives
    to_parent.first.reset();
    char c = 0;
    while (::read(to_child.first.get(), &c, 1) == 1 &&
           ::write(to_parent.second.get(), &c, 1) == 1) {
    }
    ::_exit(0);
  }
  char c = 'x';
  for (auto _ : state) {
    if (::write(to_child.second.get(), &c, 1) != 1 || ::read(to_parent.first.get(), &c, 1) != 1) {
      state.SkipWithError("pipe round trip failed");
      break;
    }
  }
  to_child.second.reset();  // EOF ends the child's loop
  int status = 0;
  ::waitpid(child, &status, 0);
}

}  // namespace

BENCHMARK(BM_process_roundtrip_ptk_futex)->Name("BM_process_roundtrip/ptk_futex")->UseRealTime();
BENCHMARK(BM_process_roundtrip_pipe)->Name("BM_process_roundtrip/pipe")->UseRealTime();

PTK_BENCHMARK_MAIN()
