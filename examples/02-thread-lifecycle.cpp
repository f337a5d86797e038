// 02 — ptk::thread: a named thread whose life can be watched.
//
// A ptk::thread is a std::jthread that also
//   * has a name the kernel shows (top -H, ps -L, gdb, /proc/self/task/<tid>/comm);
//   * reports its state from any thread: created, running, then finished or failed;
//   * keeps an exception escaping its function instead of calling std::terminate;
//   * knows its kernel thread id, so ptk::thread_info can read the kernel's view of
//     it from /proc: scheduler state, CPU time, context switches, last CPU.
// Like std::jthread its function may take a std::stop_token first, and its destructor
// requests a stop and joins: a ptk::thread never outlives its owner.
#include <ptk/thread.hpp>

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

namespace {

using steady = std::chrono::steady_clock;

double ms(steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

const char* name_of(ptk::thread_state s) { return ptk::to_string(s).data(); }

// One line of what the kernel says about thread `tid` of this process.
void print_kernel_view(pid_t tid) {
  const ptk::thread_stats s = ptk::thread_info(tid);
  std::printf(
      "    tid %d \"%s\": state %c (%s), cpu %.0f ms user + %.0f ms system,\n"
      "      context switches %llu voluntary + %llu involuntary, last ran on CPU %d, nice %d\n",
      static_cast<int>(s.tid), s.name.c_str(), s.state_letter, ptk::to_string(s.state).data(),
      ms(s.user_time), ms(s.system_time),
      static_cast<unsigned long long>(s.voluntary_context_switches),
      static_cast<unsigned long long>(s.nonvoluntary_context_switches), s.last_cpu, s.nice);
}

// Gives the kernel a moment to show `tid` asleep: a thread that has just decided to
// wait is still "R" until it reaches the futex. Bounded; the caller prints whatever
// state it ends up seeing.
void until_kernel_shows_sleeping(pid_t tid) {
  for (int i = 0; i < 100'000; ++i) {
    if (ptk::thread_info(tid).state == ptk::scheduler_state::sleeping) return;
    std::this_thread::yield();
  }
}

// CPU-bound work the optimiser cannot remove: a xorshift step.
std::uint64_t churn(std::uint64_t x) {
  for (int i = 0; i < 1000; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

}  // namespace

int main() {
  std::printf(
      "main thread: kernel tid %d (the process id is %d: the main thread's tid is the pid)\n",
      static_cast<int>(ptk::this_thread_id()), static_cast<int>(::getpid()));

  // 1. A life: created -> running -> finished. The thread waits on an event so that
  //    we can look at it while it runs; nothing here relies on timing.
  std::printf("\n1. created -> running -> finished\n");
  {
    ptk::event may_finish;
    ptk::thread worker{"lifecycle-worker", [&may_finish] { may_finish.wait(); }};
    // Until the new thread starts its function the state is created; it may well
    // have started already by the time we look.
    std::printf("  just after construction: %s\n", name_of(worker.state()));
    const pid_t tid = worker.native_id();  // waits (microseconds) until the thread has started
    std::printf("  native_id() = %d, state now: %s (it is inside may_finish.wait())\n",
                static_cast<int>(tid), name_of(worker.state()));
    std::printf("  name() = \"%s\" (%zu bytes); the kernel keeps 15 of them:\n",
                worker.name().c_str(), worker.name().size());
    until_kernel_shows_sleeping(tid);
    print_kernel_view(tid);

    const auto t0 = steady::now();
    const bool ended = worker.wait_for(std::chrono::milliseconds(20));
    std::printf("  wait_for(20 ms) -> %s after %.1f ms: the function has not ended\n",
                ended ? "true" : "false", ms(steady::now() - t0));

    may_finish.set();
    worker.join();
    std::printf("  after set() and join(): %s, joinable() = %s\n", name_of(worker.state()),
                worker.joinable() ? "true" : "false");

    // The id stays readable after join, but the thread is gone from /proc (or about
    // to be: the kernel tears a thread down a little after join() returns).
    try {
      const ptk::thread_stats s = ptk::thread_info(worker.native_id());
      std::printf("  thread_info after join: still listed, state %c\n", s.state_letter);
    } catch (const std::system_error& e) {
      std::printf("  thread_info after join throws: \"%s\"\n", e.what());
    }
  }

  // 2. The kernel's view of a busy thread and of a sleeping one, side by side. Both
  //    take a std::stop_token; the busy one also takes an argument (copied into it).
  std::printf("\n2. the kernel's view: a CPU-bound thread and a sleeping one\n");
  {
    ptk::event warmed_up;
    ptk::event never_set;
    std::uint64_t rounds = 0;  // written by the spinner, read after join()
    std::uint64_t checksum = 0;

    ptk::thread spinner{"spinner",
                        [&](const std::stop_token& stop, std::uint64_t seed) {
                          const auto warm = steady::now() + std::chrono::milliseconds(150);
                          std::uint64_t x = seed;
                          std::uint64_t n = 0;
                          while (!stop.stop_requested()) {
                            x = churn(x);
                            ++n;
                            if (!warmed_up.is_set() && steady::now() >= warm) warmed_up.set();
                          }
                          rounds = n;
                          checksum = x;
                        },
                        std::uint64_t{0x9E3779B97F4A7C15}};
    // ptk::event's wait accepts a stop token: the sleeper wakes up when asked to stop.
    ptk::thread sleeper{
        "sleeper", [&never_set](std::stop_token stop) { (void)never_set.wait(std::move(stop)); }};

    warmed_up.wait();  // the spinner has been burning CPU for ~150 ms
    until_kernel_shows_sleeping(sleeper.native_id());
    // Both are "running" to ptk (their functions have not returned); the kernel tells
    // the one computing from the one asleep on a futex.
    std::printf("  spinner, computing (ptk state: %s):\n", name_of(spinner.state()));
    print_kernel_view(spinner.native_id());
    std::printf("  sleeper, blocked in ptk::event::wait (ptk state: %s):\n",
                name_of(sleeper.state()));
    print_kernel_view(sleeper.native_id());

    const auto t0 = steady::now();
    const bool spinner_asked = spinner.request_stop();
    const bool sleeper_asked = sleeper.request_stop();
    spinner.join();
    sleeper.join();
    std::printf("  request_stop() on both -> %s, %s; both joined %.2f ms later\n",
                spinner_asked ? "true" : "false", sleeper_asked ? "true" : "false",
                ms(steady::now() - t0));
    std::printf("  spinner %s after %llu rounds (checksum %016llx), sleeper %s\n",
                name_of(spinner.state()), static_cast<unsigned long long>(rounds),
                static_cast<unsigned long long>(checksum), name_of(sleeper.state()));
  }

  // 3. An exception that escapes the function: a std::thread would call
  //    std::terminate; a ptk::thread keeps it, and its state becomes failed.
  std::printf("\n3. failed: the exception is kept, not fatal\n");
  {
    ptk::thread failing{"failing", [] { throw std::runtime_error("disk on fire"); }};
    failing.join();
    std::printf("  state: %s\n", name_of(failing.state()));
    try {
      std::rethrow_exception(failing.exception());
    } catch (const std::runtime_error& e) {
      std::printf("  rethrown from exception(): std::runtime_error \"%s\"\n", e.what());
    }
  }

  // 4. The destructor requests a stop and joins, so leaving a scope never leaves a
  //    thread running (and never calls std::terminate as a std::thread would).
  std::printf("\n4. destruction stops and joins\n");
  {
    ptk::event polling;
    std::uint64_t polls = 0;  // read after the thread is joined
    steady::time_point stop_at;
    {
      ptk::thread poller{"poller", [&polls, &polling](const std::stop_token& stop) {
                           while (!stop.stop_requested()) {
                             ++polls;
                             polling.set();
                           }
                         }};
      polling.wait();
      stop_at = steady::now();
    }  // ~thread: request_stop(), then join()
    std::printf("  the scope's end stopped and joined the poller in %.2f ms (poll count: %llu)\n",
                ms(steady::now() - stop_at), static_cast<unsigned long long>(polls));
  }
  return 0;
}
