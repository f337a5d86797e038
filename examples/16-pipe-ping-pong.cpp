// 16 — a typed pipe between a parent and a child process (multiprocessing.Pipe).
//
// ptk::pipe<T>::create() gives two connected ends. The parent keeps one and hands
// the other to a child it spawns: the child is this same program started again
// with "child" as its argument, and finds its end as descriptors 3 and 4 (the read
// end of one kernel pipe and the write end of the other, ptk::command::pass_fd). Messages are typed
// and framed, so a std::string arrives whole; close() ends the conversation, and a child that dies
// instead is reported as peer_lost rather than a hang.
#include <ptk/ipc.hpp>
#include <ptk/process.hpp>

#include <chrono>
#include <cstdio>
#include <string>

namespace {

int child() {
  auto ch = ptk::pipe<std::string>::from_fds(3, 4);
  while (auto msg = ch.recv()) ch.send("pong " + *msg);  // until the parent closes
  ch.close();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "child") return child();

  auto [mine, theirs] = ptk::pipe<std::string>::create();
  auto worker = ptk::spawn(ptk::command{"/proc/self/exe"}
                               .arg("child")
                               .pass_fd(theirs.read_fd(), 3)
                               .pass_fd(theirs.write_fd(), 4));
  // The child has its own copies of its end now. Drop ours: while this process holds
  // them, a child that dies looks silent here instead of reading as peer_lost.
  { auto handed_over = std::move(theirs); }
  std::printf("1. spawned pid %d with its end of the pipe as fds 3 and 4\n", worker.pid());

  std::puts("2. ping-pong: typed messages, framed, any length");
  for (int i = 1; i <= 3; ++i) {
    mine.send("ping " + std::to_string(i));
    std::printf("  parent got: %s\n", mine.recv().value().c_str());
  }

  constexpr int rounds = 2000;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < rounds; ++i) {
    mine.send("x");
    mine.recv().value();
  }
  const auto us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  std::printf("3. %d round trips: %.1f us each (two context switches per trip)\n", rounds,
              us / rounds);

  mine.close();  // the child's recv() drains, then sees closed
  std::printf("4. after close(): our recv says %s, the child %s\n",
              ptk::to_string(mine.recv().status()), worker.wait().to_string().c_str());
  return 0;
}
