// 18 — several worker processes sharing one queue (multiprocessing.Queue).
//
// ptk::queue<T> is a bounded multi-producer/multi-consumer queue in shared memory.
// The parent puts jobs in one queue; three worker processes take them and put
// results in another. Workers stop when the job queue is closed and drained. A
// worker that crashes does not corrupt the queue or lose a job it had not taken.
#include <ptk/ipc.hpp>
#include <ptk/process.hpp>

#include <unistd.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace {

struct job {
  int id;
  int n;
};
struct result {
  int id;
  long value;
  pid_t worker;
};

long slow_square_sum(int n) {
  long s = 0;
  for (int i = 1; i <= n; ++i) s += static_cast<long>(i) * i;
  return s;
}

int worker(const std::string& jobs_name, const std::string& results_name) {
  auto jobs = ptk::queue<job>::open(jobs_name);
  auto results = ptk::queue<result>::open(results_name);
  while (auto j = jobs.recv()) results.send({j->id, slow_square_sum(j->n), ::getpid()});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 3 && std::string(argv[1]) == "worker") return worker(argv[2], argv[3]);

  const std::string base = "ptk-example-18-" + std::to_string(::getpid());
  auto jobs = ptk::queue<job>::create(base + "-jobs", 16);
  auto results = ptk::queue<result>::create(base + "-results", 64);

  std::vector<ptk::process> workers;
  for (int w = 0; w < 3; ++w) {
    workers.push_back(ptk::spawn(
        ptk::command{"/proc/self/exe"}.args({"worker", base + "-jobs", base + "-results"})));
  }
  std::printf("1. three workers (pids %d, %d, %d) share one job queue of %zu slots\n",
              workers[0].pid(), workers[1].pid(), workers[2].pid(), jobs.capacity());

  constexpr int count = 30;
  for (int i = 0; i < count; ++i) jobs.send({i, 2000000 + i});  // blocks while the queue is full
  jobs.close();  // workers drain what is left, then their recv() says closed
  std::puts("2. 30 jobs sent, queue closed");

  std::map<pid_t, int> per_worker;
  for (auto& w : workers) per_worker[w.pid()] = 0;
  std::vector<int> done(count, 0);
  for (int i = 0; i < count; ++i) {
    const auto r = results.recv().value();
    if (r.value != slow_square_sum(2000000 + r.id)) std::printf("  job %d: wrong result!\n", r.id);
    ++done[static_cast<std::size_t>(r.id)];
    ++per_worker[r.worker];
  }
  bool once = true;
  for (int d : done) once = once && d == 1;
  std::printf("3. %s; who did how many:\n",
              once ? "every job done exactly once" : "SOME JOB WAS LOST OR REPEATED");
  for (const auto& [pid, n] : per_worker) std::printf("  worker %d: %d jobs\n", pid, n);
  for (auto& w : workers) std::printf("4. worker %d %s\n", w.pid(), w.wait().to_string().c_str());
  return 0;
}
