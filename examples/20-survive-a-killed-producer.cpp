// 20 — a consumer that survives its producer being killed.
//
// The producer sends numbered messages and is killed with SIGKILL in the middle of
// writing one. The consumer receives every message that was complete, in order,
// never a torn one, and then learns that its peer is gone (peer_lost) instead of
// waiting forever. The same holds for ptk::queue and ptk::pipe.
#include <ptk/ipc.hpp>
#include <ptk/process.hpp>

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace {

int producer(const std::string& name) {
  auto ring = ptk::shm_ring<std::string>::open(name);
  for (int i = 0; i < 1000; ++i) ring.send("message " + std::to_string(i));
  auto slot = ring.prepare(100);  // a message half written...
  std::memset(slot.bytes().data(), '#', 50);
  ::kill(::getpid(), SIGKILL);  // ...when the producer dies
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 && std::string(argv[1]) == "producer") return producer(argv[2]);

  const std::string name = "ptk-example-20-" + std::to_string(::getpid());
  auto ring = ptk::shm_ring<std::string>::create(name, 1 << 16);
  auto child = ptk::spawn(ptk::command{"/proc/self/exe"}.args({"producer", name}));
  std::printf("1. producer pid %d sends 1000 messages, then dies half-way through the next\n",
              child.pid());

  int received = 0;
  std::string last;
  ptk::recv_result<std::string> r = ring.recv();
  for (; r; r = ring.recv()) {
    if (*r != "message " + std::to_string(received)) std::puts("  out of order or torn!");
    last = *r;
    ++received;
  }
  std::printf("2. received %d complete messages, the last \"%s\"\n", received, last.c_str());
  std::printf("3. then recv() said: %s (no hang, no torn message)\n", ptk::to_string(r.status()));
  std::printf("4. the producer %s\n", child.wait().to_string().c_str());
  return 0;
}
