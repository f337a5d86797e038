#include <ptk/detail/procfs.hpp>
#include <ptk/detail/unique_fd.hpp>
#include <ptk/process.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

bool process_gone(pid_t pid) {
  if (::kill(pid, 0) == -1 && errno == ESRCH) return true;
  // Reparented to init and not yet reaped counts as gone for the caller's purpose.
  try {
    return ptk::process_info(pid).state == 'Z';
  } catch (const std::system_error&) {
    return true;
  }
}

pid_t first_line_as_pid(const std::string& text) { return static_cast<pid_t>(std::stoi(text)); }

}  // namespace

TEST_CASE("spawn runs a program and wait reports its exit code") {
  CHECK(ptk::spawn(ptk::command{"true"}).wait().success());
  const auto s = ptk::spawn(ptk::command{"false"}).wait();
  CHECK(s.exited());
  CHECK(s.code() == 1);
  CHECK(ptk::spawn(ptk::command{"sh"}.args({"-c", "exit 42"})).wait().code() == 42);
}

TEST_CASE("spawning a missing program throws with the program name and errno") {
  const int fds = ptk::test::open_fd_count();
  try {
    (void)ptk::spawn(ptk::command{"ptk-no-such-program"});
    FAIL("spawn did not throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::no_such_file_or_directory);
    CHECK(std::string(e.what()) == "spawn 'ptk-no-such-program': No such file or directory");
  }
  CHECK_THROWS_WITH(ptk::spawn(ptk::command{"/nonexistent/bin/tool"}),
                    "spawn '/nonexistent/bin/tool': No such file or directory");
  CHECK(ptk::test::open_fd_count() == fds);
}

TEST_CASE("spawning in a missing directory names the directory") {
  CHECK_THROWS_WITH(ptk::spawn(ptk::command{"true"}.cwd("/nonexistent/dir")),
                    "spawn 'true' in '/nonexistent/dir': No such file or directory");
}

TEST_CASE("a child killed by a signal is reported as signaled, with the signal") {
  const auto s = ptk::spawn(ptk::command{"sh"}.args({"-c", "kill -TERM $$"})).wait();
  CHECK_FALSE(s.exited());
  CHECK(s.signaled());
  CHECK(s.signal() == SIGTERM);
  CHECK(s.code() == -1);
  CHECK(s.to_string() == "killed by signal 15 (SIGTERM)");
}

TEST_CASE("exit_status decodes exit codes, signals and core dumps") {
  const rusage none{};
  CHECK(ptk::exit_status(3 << 8, none).to_string() == "exited with code 3");
  const ptk::exit_status core(SIGSEGV | 0x80, none);  // the kernel's "core dumped" bit
  CHECK(core.signaled());
  CHECK(core.core_dumped());
  CHECK(core.to_string() == "killed by signal 11 (SIGSEGV), core dumped");
}

TEST_CASE("exit_status carries the child's CPU time and peak memory") {
  const auto s = ptk::spawn(ptk::command{"sh"}.args(
                                {"-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"}))
                     .wait();
  CHECK(s.success());
  CHECK(s.usage().user_time + s.usage().system_time > 0ns);
  CHECK(s.usage().max_rss_bytes > 0);
}

TEST_CASE("wait_for gives up on a running child; terminate then ends it with SIGTERM") {
  auto p = ptk::spawn(ptk::command{"sleep"}.arg("30"));
  CHECK(p.pidfd() >= 0);
  CHECK_FALSE(p.wait_for(50ms).has_value());
  CHECK_FALSE(p.try_wait().has_value());
  const auto s = p.terminate(10s);
  CHECK(s.signal() == SIGTERM);
  CHECK(p.pidfd() == -1);  // released once reaped
  CHECK_FALSE(p.signal(SIGKILL));
}

TEST_CASE("terminate escalates to SIGKILL when the child ignores SIGTERM") {
  auto p = ptk::spawn(ptk::command{"sh"}
                          .args({"-c", "trap '' TERM; echo ready; exec sleep 30"})
                          .std_out(ptk::stdio::pipe));
  char buf[16];
  REQUIRE(p.std_out().read_some(buf, sizeof buf) > 0);  // the trap is in place
  CHECK(p.terminate(100ms).signal() == SIGKILL);
}

TEST_CASE("a stop request ends a wait on a child that keeps running") {
  auto p = ptk::spawn(ptk::command{"sleep"}.arg("30"));
  std::stop_source stop;
  std::thread stopper([&] { stop.request_stop(); });
  CHECK_FALSE(p.wait(stop.get_token()).has_value());
  stopper.join();
  CHECK(p.terminate().signaled());
}

TEST_CASE("pipes carry stdin to the child and its stdout back") {
  auto p = ptk::spawn(
      ptk::command{"tr"}.args({"a-z", "A-Z"}).std_in(ptk::stdio::pipe).std_out(ptk::stdio::pipe));
  p.std_in().write_all("hello pipes\n");
  p.std_in().close();
  CHECK(p.std_out().read_all() == "HELLO PIPES\n");
  CHECK(p.wait().success());
}

TEST_CASE("writing to a child that is gone throws EPIPE instead of killing the parent") {
  auto p = ptk::spawn(ptk::command{"true"}.std_in(ptk::stdio::pipe));
  REQUIRE(p.wait().success());
  try {
    p.std_in().write_all(std::string(1 << 20, 'x'));
    FAIL("write to a dead child succeeded");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::broken_pipe);
  }
}

TEST_CASE("the child gets the working directory and environment asked for") {
  CHECK(ptk::run(ptk::command{"pwd"}.cwd("/tmp")).out == "/tmp\n");
  CHECK(ptk::run(ptk::command{"sh"}.args({"-c", "echo $PTK_X"}).env("PTK_X", "forty two")).out ==
        "forty two\n");
  ::setenv("PTK_INHERITED", "yes", 1);
  CHECK(ptk::run({"sh", "-c", "echo ${PTK_INHERITED:-no}"}).out == "yes\n");
  CHECK(
      ptk::run(
          ptk::command{"sh"}.args({"-c", "echo ${PTK_INHERITED:-no}"}).env_remove("PTK_INHERITED"))
          .out == "no\n");
  CHECK(ptk::run(ptk::command{"/bin/sh"}.args({"-c", "echo ${HOME:-none}"}).env_clear()).out ==
        "none\n");
  ::unsetenv("PTK_INHERITED");
}

TEST_CASE("no descriptor of the parent leaks into the child, not even one without O_CLOEXEC") {
  const int leaky = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  REQUIRE(leaky >= 3);
  const auto r = ptk::run({"sh", "-c", "ls /proc/$$/fd"});
  ::close(leaky);
  CHECK(r.out == "0\n1\n2\n");
}

TEST_CASE("pass_fd hands a descriptor to the child under the number asked for") {
  auto pipe = ptk::detail::make_pipe();
  auto p = ptk::spawn(
      ptk::command{"sh"}.args({"-c", "echo through fd 5 >&5"}).pass_fd(pipe.second.get(), 5));
  pipe.second.reset();
  ptk::pipe_end from_child(std::move(pipe.first));
  CHECK(from_child.read_all() == "through fd 5\n");
  CHECK(p.wait().success());
}

TEST_CASE("kill_tree kills the child's own children, with or without a process group") {
  for (const bool group : {true, false}) {
    INFO("new process group: " << group);
    auto p = ptk::spawn(ptk::command{"sh"}
                            .args({"-c", "sleep 30 & echo $!; wait"})
                            .std_out(ptk::stdio::pipe)
                            .new_process_group(group));
    char buf[32] = {};
    REQUIRE(p.std_out().read_some(buf, sizeof buf - 1) > 0);
    const pid_t grandchild = first_line_as_pid(buf);
    p.kill_tree();
    CHECK(p.wait().signal() == SIGKILL);
    CHECK(ptk::test::eventually([&] { return process_gone(grandchild); }));
  }
}

TEST_CASE("an unwaited process is killed and reaped when its object dies") {
  pid_t pid = 0;
  {
    auto p = ptk::spawn(ptk::command{"sleep"}.arg("30"));
    pid = p.pid();
  }
  CHECK(::kill(pid, 0) == -1);  // gone entirely: not even a zombie
  CHECK(errno == ESRCH);
}

TEST_CASE("many threads spawning at once all get their children, and nothing leaks") {
  const int fds = ptk::test::open_fd_count();
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        if (ptk::run({"sh", "-c", "echo $$"}).status.success()) ok.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok.load() == 80);
  CHECK(ptk::test::open_fd_count() == fds);
}

TEST_CASE("run captures stdout and stderr and feeds the input") {
  const auto r = ptk::run({"sh", "-c", "cat; echo err >&2; exit 3"}, {.input = "fed\n"});
  CHECK(r.out == "fed\n");
  CHECK(r.err == "err\n");
  CHECK(r.status.code() == 3);
  CHECK_FALSE(r.timed_out);
}

TEST_CASE("run moves megabytes both ways without deadlocking") {
  std::string big(4 << 20, 'z');
  const auto r = ptk::run({"sh", "-c", "cat; cat /dev/null >&2"}, {.input = big});
  CHECK(r.out.size() == big.size());
  CHECK(r.out == big);
}

TEST_CASE("run kills a child that outlives its timeout, and the child's children") {
  const auto start = std::chrono::steady_clock::now();
  const auto r = ptk::run({"sh", "-c", "sleep 30 & echo $!; wait"}, {.timeout = 300ms});
  CHECK(r.timed_out);
  CHECK(r.status.signal() == SIGKILL);
  CHECK(std::chrono::steady_clock::now() - start < 20s);
  const pid_t grandchild = first_line_as_pid(r.out);
  CHECK(ptk::test::eventually([&] { return process_gone(grandchild); }));
}

TEST_CASE("run caps captured output at max_output and says so") {
  const auto r = ptk::run({"sh", "-c", "head -c 100000 /dev/zero"}, {.max_output = 1000});
  CHECK(r.out.size() == 1000);
  CHECK(r.truncated);
  CHECK(r.status.success());
}

TEST_CASE("process_info describes this process and a child") {
  const auto me = ptk::process_info(::getpid());
  CHECK(me.pid == ::getpid());
  CHECK(me.ppid == ::getppid());
  CHECK(me.threads >= 1);
  CHECK(me.rss_bytes > 0);
  CHECK_FALSE(me.cmdline.empty());
  const auto age = std::chrono::system_clock::now() - me.start_time;
  CHECK(age > -5s);
  CHECK(age < 24h);

  auto p = ptk::spawn(ptk::command{"sleep"}.arg("30"));
  // The parent resumes while exec is still laying out the new program's arguments.
  REQUIRE(ptk::test::eventually([&] { return !ptk::process_info(p.pid()).cmdline.empty(); }));
  const auto child = ptk::process_info(p.pid());
  CHECK(child.name == "sleep");
  CHECK(child.ppid == ::getpid());
  CHECK(child.cmdline == std::vector<std::string>{"sleep", "30"});
  p.kill_tree();
  p.wait();
  CHECK_THROWS_WITH(ptk::process_info(p.pid()),
                    "process_info " + std::to_string(p.pid()) + ": No such file or directory");
}

TEST_CASE("process_table enforces its limit, lists, kills and forgets children") {
  ptk::process_table table{{.max_processes = 2, .grace = 5s}};
  const pid_t a = table.spawn(ptk::command{"sleep"}.arg("30"));
  const pid_t b = table.spawn(ptk::command{"sh"}.args({"-c", "exit 7"}));
  REQUIRE(ptk::test::eventually([&] { return table.running() == 1; }));  // b exits at once
  const pid_t c = table.spawn(ptk::command{"sleep"}.arg("30"));
  CHECK_THROWS_AS(table.spawn(ptk::command{"true"}), ptk::limit_exceeded);

  const auto entries = table.list();
  REQUIRE(entries.size() == 3);
  CHECK(table.status(b)->status->code() == 7);
  CHECK(table.status(a)->running());
  CHECK(table.status(a)->argv == std::vector<std::string>{"sleep", "30"});
  CHECK_FALSE(table.status(12345678).has_value());

  CHECK_FALSE(table.remove(a));  // still running
  CHECK(table.kill(a)->signal() == SIGTERM);
  CHECK(table.remove(a));
  CHECK(table.remove(b));
  CHECK(table.list().size() == 1);
  CHECK(table.signal(c, SIGKILL));
  REQUIRE(ptk::test::eventually([&] { return table.reap() == 1 || table.running() == 0; }));
  CHECK(table.status(c)->status->signal() == SIGKILL);
}

TEST_CASE("destroying a process_table terminates what still runs") {
  pid_t pid = 0;
  {
    ptk::process_table table;
    pid = table.spawn(ptk::command{"sleep"}.arg("30"));
  }
  CHECK(::kill(pid, 0) == -1);
  CHECK(errno == ESRCH);
}

namespace {
std::string read_file(const std::string& path) {
  return ptk::detail::read_proc_file(path, "read " + path);  // works for any file
}

// Children of this process that are zombies (exited, not reaped).
int zombie_children() {
  int n = 0;
  DIR* dir = ::opendir("/proc");
  REQUIRE(dir != nullptr);
  while (const dirent* e = ::readdir(dir)) {
    pid_t pid = 0;
    if (!ptk::detail::parse_number(std::string_view(e->d_name), pid)) continue;
    try {
      const auto s = ptk::process_info(pid);
      if (s.ppid == ::getpid() && s.state == 'Z') ++n;
    } catch (const std::system_error&) {
    }
  }
  ::closedir(dir);
  return n;
}

struct temp_dir {
  std::string path;
  temp_dir() {
    char templ[] = "/tmp/ptk-test-XXXXXX";
    REQUIRE(::mkdtemp(templ) != nullptr);
    path = templ;
  }
  ~temp_dir() { (void)ptk::run({"rm", "-rf", path}); }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};
}  // namespace

TEST_CASE("stdio can be files: read for stdin, truncate or append for output") {
  temp_dir dir;
  const std::string in = dir.path + "/in.txt";
  const std::string out = dir.path + "/out.txt";
  REQUIRE(ptk::run({"sh", "-c", "printf 'line one\\n' > " + in}).status.success());
  REQUIRE(ptk::spawn(ptk::command{"cat"}
                         .std_in(ptk::stdio_file(in, ptk::file_mode::read))
                         .std_out(ptk::stdio_file(out, ptk::file_mode::truncate)))
              .wait()
              .success());
  REQUIRE(ptk::spawn(ptk::command{"echo"}
                         .arg("line two")
                         .std_out(ptk::stdio_file(out, ptk::file_mode::append)))
              .wait()
              .success());
  CHECK(read_file(out) == "line one\nline two\n");
  REQUIRE(ptk::spawn(ptk::command{"echo"}.arg("fresh").std_out(
                         ptk::stdio_file(out, ptk::file_mode::truncate)))
              .wait()
              .success());
  CHECK(read_file(out) == "fresh\n");
  CHECK_THROWS_WITH(
      ptk::spawn(
          ptk::command{"cat"}.std_in(ptk::stdio_file(dir.path + "/missing", ptk::file_mode::read))),
      "spawn 'cat' with input file '" + dir.path + "/missing': No such file or directory");
}

TEST_CASE("stderr can follow stdout (2>&1), and streams can be existing descriptors") {
  auto p = ptk::spawn(ptk::command{"sh"}
                          .args({"-c", "echo out; echo err >&2; echo out2"})
                          .std_out(ptk::stdio::pipe)
                          .std_err(ptk::stdio::to_stdout));
  CHECK(p.std_out().read_all() == "out\nerr\nout2\n");
  CHECK(p.wait().success());
  CHECK_THROWS_AS(ptk::spawn(ptk::command{"true"}.std_out(ptk::stdio::to_stdout)),
                  std::invalid_argument);

  auto pipe = ptk::detail::make_pipe();
  auto q = ptk::spawn(ptk::command{"echo"}.arg("via fd").std_out(ptk::stdio_fd(pipe.second.get())));
  pipe.second.reset();
  CHECK(ptk::pipe_end(std::move(pipe.first)).read_all() == "via fd\n");
  CHECK(q.wait().success());
}

TEST_CASE("new_session makes the child a session leader, and kill_tree uses it") {
  auto p = ptk::spawn(ptk::command{"sh"}
                          .args({"-c", "cat /proc/$$/stat; sleep 30"})
                          .std_out(ptk::stdio::pipe)
                          .new_session());
  char buf[1024] = {};
  REQUIRE(p.std_out().read_some(buf, sizeof buf - 1) > 0);
  ptk::detail::stat_fields f;
  REQUIRE(f.parse(buf));
  pid_t session = 0;
  REQUIRE(f.number(6, session));
  CHECK(session == p.pid());
  p.kill_tree();
  CHECK(p.wait().signal() == SIGKILL);
}

TEST_CASE("only stdio reaches the child even with a descriptor limit of 1048576") {
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
  rlimit big{1048576, std::max<rlim_t>(old.rlim_max, 1048576)};
  if (::setrlimit(RLIMIT_NOFILE, &big) != 0) {
    WARN("cannot raise RLIMIT_NOFILE to 1048576 here (not root?): checked at the current limit");
    big = old;
  }
  const int high = static_cast<int>(big.rlim_cur) - 10;
  REQUIRE(::dup2(STDOUT_FILENO, high) == high);  // no O_CLOEXEC, far above the usual range
  const auto r = ptk::run({"sh", "-c", "ls /proc/$$/fd"});
  ::close(high);
  ::setrlimit(RLIMIT_NOFILE, &old);
  CHECK(r.out == "0\n1\n2\n");
}

TEST_CASE("hundreds of spawns leave no zombie and no descriptor behind") {
  const int fds = ptk::test::open_fd_count();
  for (int i = 0; i < 300; ++i) {
    auto p = ptk::spawn(ptk::command{"true"}.std_out(ptk::stdio::pipe).std_err(ptk::stdio::pipe));
    if (i % 2 == 0) p.wait();  // the other half is reaped by the destructor
  }
  CHECK(zombie_children() == 0);
  CHECK(ptk::test::open_fd_count() == fds);
}

TEST_CASE("a process_table is safe to use from many threads at once") {
  ptk::process_table table{{.max_processes = 100, .grace = 5s}};
  std::atomic<int> killed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        const pid_t pid = table.spawn(ptk::command{"sleep"}.arg("30"));
        (void)table.list();
        if (table.status(pid) && table.kill(pid)->signal() == SIGTERM) killed.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(killed.load() == 40);
  CHECK(table.running() == 0);
  CHECK(table.list().size() == 40);
}

TEST_CASE("run takes a one-word braced argv and designated options") {
  // {"true"} alone could be a ptk::command or a one-word argv; it must not be ambiguous.
  const auto r = ptk::run({"true"}, {.timeout = 5s});
  CHECK(r.status.exited());
  CHECK(r.status.code() == 0);
  const auto echoed = ptk::run({"cat"}, {.input = "fed"});
  CHECK(echoed.out == "fed");
}
