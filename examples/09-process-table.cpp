// 09 — a process table with live states: the REST demo's create/list/status/kill.
//
// The Python original answered POST /processes, GET /processes, GET /processes/<pid>
// and DELETE /processes/<pid> with subprocess and psutil. Here the same four requests
// are plain function calls: ptk::process_table starts, limits, reaps and kills the
// children; ptk::process_info reads what the kernel says about each of them (its
// state letter, memory, CPU time). Every child also gets a parent-death signal, so
// if this supervisor is killed, its children go with it instead of running on.
#include <ptk/process.hpp>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

// The kernel's one-letter state, spelled out.
const char* state_name(char state) {
  constexpr std::pair<char, const char*> names[] = {{'R', "running"},   {'S', "sleeping"},
                                                    {'D', "disk wait"}, {'T', "stopped"},
                                                    {'t', "traced"},    {'Z', "zombie"}};
  for (const auto& [letter, name] : names) {
    if (letter == state) return name;
  }
  return "other";
}

std::string joined(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + a;
  return out;
}

// POST /processes: start a command; 429 when the table is full.
pid_t create(ptk::process_table& table, const std::vector<std::string>& argv) {
  std::printf("POST   /processes %-34s", ("[" + joined(argv) + "]").c_str());
  try {
    auto cmd = ptk::command{argv.front()}.args({argv.begin() + 1, argv.end()});
    // Children die with this supervisor. Where ptk cannot set a parent-death signal
    // (its posix_spawn fallback), run them without one.
    const pid_t pid = [&] {
      try {
        return table.spawn(ptk::command{cmd}.parent_death_signal(SIGKILL));
      } catch (const std::system_error& e) {
        if (e.code() != std::errc::function_not_supported) throw;
        return table.spawn(cmd);
      }
    }();
    std::printf("-> 201 pid %d\n", pid);
    return pid;
  } catch (const ptk::limit_exceeded& e) {
    std::printf("-> 429 %s\n", e.what());
  } catch (const std::system_error& e) {
    std::printf("-> 400 %s\n", e.what());
  }
  return -1;
}

// One row of GET /processes: the table's record plus the kernel's live view.
void print_row(const ptk::process_entry& e) {
  std::printf("  %6d  %-28s ", e.pid, joined(e.argv).c_str());
  if (!e.running()) {
    std::printf("finished: %s\n", e.status->to_string().c_str());
    return;
  }
  try {
    const auto info = ptk::process_info(e.pid);
    const auto cpu = std::chrono::duration<double, std::milli>(info.user_time + info.system_time);
    std::printf("%c %-9s rss %5llu KiB  cpu %7.1f ms\n", info.state, state_name(info.state),
                static_cast<unsigned long long>(info.rss_bytes / 1024), cpu.count());
  } catch (const std::system_error&) {
    std::printf("exited a moment ago\n");
  }
}

// Waits (bounded, without sleeping blindly) until the kernel reports `state` for pid.
void await_state(pid_t pid, char state) {
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ptk::process_info(pid).state == state) return;
    std::this_thread::yield();
  }
}

}  // namespace

int main() {
  ptk::process_table table{{.max_processes = 4, .grace = 1s}};

  create(table, {"no-such-program"});
  const pid_t sleeper = create(table, {"sleep", "30"});
  const pid_t spinner = create(table, {"sh", "-c", "while :; do :; done"});
  const pid_t paused = create(table, {"sleep", "31"});
  create(table, {"sleep", "32"});
  create(table, {"sleep", "33"});  // a fifth: the table is full

  // Pause one child, so the listing shows the three common live states.
  table.signal(paused, SIGSTOP);
  await_state(paused, 'T');
  await_state(spinner, 'R');

  std::puts("\nGET    /processes");
  for (const auto& e : table.list()) print_row(e);

  std::printf("\nGET    /processes/%d\n", sleeper);
  if (const auto e = table.status(sleeper)) print_row(*e);
  std::puts("GET    /processes/999999999");
  if (!table.status(999999999)) std::puts("  -> 404 no such process");

  std::printf("\nDELETE /processes/%d  (SIGTERM, then SIGKILL after the grace period)\n", spinner);
  std::printf("  -> %s\n", table.kill(spinner)->to_string().c_str());
  table.signal(paused, SIGCONT);
  std::printf("DELETE /processes/%d\n  -> %s\n", paused, table.kill(paused)->to_string().c_str());

  const pid_t quick = create(table, {"sh", "-c", "exit 3"});  // there is room again
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (table.status(quick)->running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }

  std::puts("\nGET    /processes  (finished processes keep their exit status until removed)");
  for (const auto& e : table.list()) print_row(e);
  std::size_t removed = 0;
  for (const auto& e : table.list()) removed += table.remove(e.pid) ? 1U : 0U;
  std::printf("\nremoved %zu finished entries; %zu still running\n", removed, table.running());
  std::puts("(the table's destructor terminates what still runs: nothing is left behind)");
  return 0;
}
