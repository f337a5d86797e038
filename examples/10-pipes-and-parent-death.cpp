// 10 — talking to a child over pipes, and children that die with their supervisor.
//
// Python's subprocess.Popen with stdin=PIPE, stdout=PIPE and pass_fds, and the
// prctl(PR_SET_PDEATHSIG) that Python users reach through preexec_fn (which is not
// safe with threads). ptk::command connects the child's streams to pipes, passes
// extra descriptors under the numbers asked for, and sets the parent-death signal
// between clone and exec without running any code of yours in the child.
#include <ptk/process.hpp>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

using namespace std::chrono_literals;

namespace {

// Reads one line (without its newline) from a pipe, keeping what follows in `buffer`.
std::string read_line(ptk::pipe_end& from, std::string& buffer) {
  for (;;) {
    if (const auto nl = buffer.find('\n'); nl != std::string::npos) {
      std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      return line;
    }
    char chunk[256];
    const std::size_t n = from.read_some(chunk, sizeof chunk);
    if (n == 0) return std::exchange(buffer, {});  // end of file
    buffer.append(chunk, n);
  }
}

// Run as "10-pipes-and-parent-death --supervisor": start a worker that must not
// outlive this process, report its pid, then wait to be killed.
int supervisor() {
  try {
    auto worker = ptk::spawn(ptk::command{"sleep"}
                                 .arg("30")
                                 .std_in(ptk::stdio::null)
                                 .std_out(ptk::stdio::null)
                                 .parent_death_signal(SIGTERM));
    std::printf("%d\n", worker.pid());
    std::fflush(stdout);
    worker.detach();  // not reaped by us: this process is about to be killed anyway
  } catch (const std::system_error& e) {
    std::printf("unsupported: %s\n", e.what());
    return 1;
  }
  char c;
  while (std::fread(&c, 1, 1, stdin) == 1) {
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--supervisor") == 0) return supervisor();

  std::puts("1. a conversation: one line to the child, one line back, as often as needed");
  auto squarer = ptk::spawn(ptk::command{"sh"}
                                .args({"-c", "while read n; do echo $((n * n)); done"})
                                .std_in(ptk::stdio::pipe)
                                .std_out(ptk::stdio::pipe));
  std::string pending;
  for (const int n : {3, 12, 99}) {
    squarer.std_in().write_all(std::to_string(n) + "\n");
    std::printf("  asked %d, child answered %s\n", n,
                read_line(squarer.std_out(), pending).c_str());
  }
  squarer.std_in().close();  // end of input: the loop in the child ends
  std::printf("  child %s\n", squarer.wait().to_string().c_str());

  std::puts("\n2. a second channel: a pipe passed as the child's descriptor 3");
  // (A close-on-exec pipe from ptk's internal helper; the IPC module's pipe will do.)
  auto progress = ptk::detail::make_pipe();
  auto worker =
      ptk::spawn(ptk::command{"sh"}
                     .args({"-c", "for i in 1 2 3; do echo step $i >&3; done; echo result: 42"})
                     .std_out(ptk::stdio::pipe)
                     .pass_fd(progress.second.get(), 3));
  progress.second.reset();  // the child holds the write end now
  ptk::pipe_end progress_in(std::move(progress.first));
  std::string steps;
  for (std::string line; !(line = read_line(progress_in, steps)).empty();) {
    std::printf("  progress on fd 3: %s\n", line.c_str());
  }
  std::printf("  stdout: %s", worker.std_out().read_all().c_str());
  worker.wait();

  std::puts("\n3. a parent-death signal: the supervisor is killed, its worker goes too");
  auto sup = ptk::spawn(ptk::command{"/proc/self/exe"}
                            .arg("--supervisor")
                            .std_in(ptk::stdio::pipe)
                            .std_out(ptk::stdio::pipe));
  std::string sup_out;
  const std::string reply = read_line(sup.std_out(), sup_out);
  if (reply.rfind("unsupported", 0) == 0) {
    std::printf("  %s\n", reply.c_str());
    return 0;
  }
  const pid_t worker_pid = static_cast<pid_t>(std::stol(reply));
  const auto before = ptk::process_info(worker_pid);
  std::printf("  supervisor %d started worker %d (%s, parent %d)\n", sup.pid(), worker_pid,
              before.name.c_str(), before.ppid);
  sup.signal(SIGKILL);  // no destructor, no cleanup code runs in the supervisor
  std::printf("  supervisor %s\n", sup.wait().to_string().c_str());
  // The kernel sent SIGTERM to the worker as the supervisor died; watch it go.
  bool gone = false;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!gone && std::chrono::steady_clock::now() < deadline) {
    try {
      gone = ptk::process_info(worker_pid).state == 'Z';  // exited, not yet reaped by init
    } catch (const std::system_error&) {
      gone = true;  // exited and reaped
    }
    if (!gone) std::this_thread::yield();
  }
  std::printf("  worker %d %s\n", worker_pid,
              gone ? "is gone: no orphan left running" : "is still running (unexpected)");
  return 0;
}
