// 07 — processes: spawn, capture, supervise, inspect.
//
// The Python original used subprocess and psutil. ptk::spawn starts a child without
// copying the parent (clone3 with CLONE_VM | CLONE_VFORK), tracks it with a pidfd, and reports how
// it ended; ptk::run captures output with a timeout; ptk::process_info reads what the kernel knows
// about any process; ptk::process_table keeps a bounded set of children for a service.
#include <ptk/process.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

using namespace std::chrono_literals;

int main() {
  std::puts("1. run a command and capture its output");
  const auto r = ptk::run({"sh", "-c", "echo hello from $0; echo a warning >&2; exit 3"});
  std::printf("  stdout: %s  stderr: %s  status: %s\n", r.out.c_str(), r.err.c_str(),
              r.status.to_string().c_str());

  std::puts("\n2. feed stdin through a pipe");
  auto sorter = ptk::spawn(
      ptk::command{"sort"}.std_in(ptk::stdio::pipe).std_out(ptk::stdio::pipe).env("LC_ALL", "C"));
  sorter.std_in().write_all("pear\napple\nfig\n");
  sorter.std_in().close();  // end-of-file: sort can start writing
  std::printf("  sorted: %s", sorter.std_out().read_all().c_str());
  std::printf("  sort %s\n", sorter.wait().to_string().c_str());

  std::puts("\n3. a failed start is an exception in the parent, not exit code 127");
  try {
    ptk::spawn(ptk::command{"no-such-program"});
  } catch (const std::system_error& e) {
    std::printf("  caught: %s\n", e.what());
  }

  std::puts("\n4. supervise: wait with a timeout, then terminate (SIGTERM, then SIGKILL)");
  auto sleeper = ptk::spawn(ptk::command{"sleep"}.arg("30"));
  std::printf("  started sleep 30 as pid %d (pidfd %d)\n", sleeper.pid(), sleeper.pidfd());
  if (!sleeper.wait_for(100ms)) std::puts("  still running after 100 ms");
  const auto info = ptk::process_info(sleeper.pid());
  std::printf("  kernel's view: name %s, parent %d, %u thread(s), %llu KiB resident\n",
              info.name.c_str(), info.ppid, info.threads,
              static_cast<unsigned long long>(info.rss_bytes / 1024));
  std::printf("  terminate(): %s\n", sleeper.terminate(2s).to_string().c_str());

  std::puts("\n5. a timeout kills the child and everything it started");
  const auto slow = ptk::run({"sh", "-c", "sleep 30 & sleep 30"}, {.timeout = 200ms});
  std::printf("  timed_out: %s, status: %s\n", slow.timed_out ? "yes" : "no",
              slow.status.to_string().c_str());

  std::puts("\n6. what a child used: CPU time and peak memory (from wait4)");
  const auto busy = ptk::run({"sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"});
  std::printf("  user %.1f ms, system %.1f ms, peak RSS %llu KiB\n",
              std::chrono::duration<double, std::milli>(busy.status.usage().user_time).count(),
              std::chrono::duration<double, std::milli>(busy.status.usage().system_time).count(),
              static_cast<unsigned long long>(busy.status.usage().max_rss_bytes / 1024));

  std::puts("\n7. a bounded table of children, as the REST service keeps them");
  ptk::process_table table{{.max_processes = 2}};
  const pid_t first = table.spawn(ptk::command{"sleep"}.arg("30"));
  table.spawn(ptk::command{"sleep"}.arg("31"));
  try {
    table.spawn(ptk::command{"sleep"}.arg("32"));
  } catch (const ptk::limit_exceeded& e) {
    std::printf("  third spawn refused: %s\n", e.what());
  }
  std::printf("  kill(%d): %s\n", first, table.kill(first)->to_string().c_str());
  table.spawn(ptk::command{"sh"}.args({"-c", "exit 5"}));  // room again
  table.reap();
  for (const auto& e : table.list()) {
    std::printf("  pid %d  %-6s %-3s %s\n", e.pid, e.argv[0].c_str(), e.argv[1].c_str(),
                e.running() ? "running" : e.status->to_string().c_str());
  }
  std::puts("  (the table's destructor terminates what still runs: no process is left behind)");
  return 0;
}
