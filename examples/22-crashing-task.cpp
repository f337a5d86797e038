// 22 — A task that crashes does not take the pool down.
//
// Each task runs in a worker process. When a worker dies in the middle of a task
// (a segfault, an abort, a kill -9, the kernel's OOM killer), only the task it was
// running fails, with ptk::worker_crash_error carrying the signal; the pool starts a
// new worker and keeps serving. A task that throws fails with ptk::remote_error,
// carrying the exception's type and message, and its worker lives on. A task that
// runs past task_timeout is killed with its worker (ptk::task_timeout_error).
//
// A program that ran the same tasks on threads would be gone at the first segfault.
#include <ptk/process_pool.hpp>

#include <signal.h>
#include <string.h>  // sigdescr_np

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// What each input makes the task do.
enum action : int { compute, segfault, abort_, kill9, throw_, hang };

int risky(int what, int x) {
  switch (what) {
    case segfault:
      ::raise(SIGSEGV);
      break;  // what a null dereference ends in
    case abort_:
      std::abort();
    case kill9:
      ::raise(SIGKILL);
      break;  // as the OOM killer would
    case throw_:
      throw std::out_of_range("input " + std::to_string(x) + " is out of range");
    case hang:
      for (;;) ::pause();
    default:
      break;
  }
  return x * x;
}
PTK_REMOTE(risky);

const char* names[] = {"compute", "segfault", "abort", "kill -9", "throw", "hang"};

}  // namespace

int main() {
  ptk::process_pool::serve_if_worker();  // in a worker: serve tasks here, never return

  using namespace std::chrono_literals;
  ptk::process_pool pool{{.workers = 2, .task_timeout = 500ms}};

  const std::vector<int> plan = {compute, segfault, compute, abort_, throw_,
                                 compute, kill9,    hang,    compute};
  std::vector<ptk::future<int>> fs;
  for (std::size_t i = 0; i < plan.size(); ++i)
    fs.push_back(pool.submit(risky, plan[i], static_cast<int>(i)));

  for (std::size_t i = 0; i < plan.size(); ++i) {
    std::printf("task %zu (%-8s) -> ", i, names[plan[i]]);
    try {
      std::printf("result %d\n", fs[i].get());
    } catch (const ptk::worker_crash_error& e) {
      std::printf("worker %s: %s\n", e.status().to_string().c_str(), ::sigdescr_np(e.signal()));
    } catch (const ptk::remote_error& e) {
      std::printf("threw %s: %s\n", e.type_name().c_str(), e.message().c_str());
    } catch (const ptk::task_timeout_error& e) {
      std::printf("timed out after %lld ms; its worker was killed\n",
                  static_cast<long long>(e.timeout().count()));
    }
  }

  // Still serving, with fresh workers.
  auto a = pool.submit(risky, compute, 10);
  auto b = pool.submit(risky, compute, 11);
  std::printf("\nafter all that, the pool still computes: %d %d\n", a.get(), b.get());

  const auto s = pool.stats();
  std::printf(
      "stats: done %llu, failed %llu, crashes %llu, timeouts %llu, restarts %llu, workers alive "
      "%zu\n",
      static_cast<unsigned long long>(s.tasks_done),
      static_cast<unsigned long long>(s.tasks_failed), static_cast<unsigned long long>(s.crashes),
      static_cast<unsigned long long>(s.timeouts), static_cast<unsigned long long>(s.restarts),
      s.workers_alive);
  return s.crashes == 3 && s.timeouts == 1 ? 0 : 1;
}
