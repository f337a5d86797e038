// 17 — producer and consumer processes over a shared-memory ring.
//
// ptk::shm_ring<T> is a single-producer/single-consumer ring in /dev/shm (or in an
// anonymous memfd). Messages move without a system call while both sides are busy:
// a side that has to wait spins briefly and then sleeps on a futex, and the other
// side wakes it only then. prepare()/commit() writes a large message in place, and
// peek() reads it in place: zero copies through the kernel.
#include <ptk/ipc.hpp>
#include <ptk/process.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct reading {
  std::uint64_t seq;
  double value;
};

int producer(const std::string& name) {
  auto ring = ptk::shm_ring<reading>::open(name);
  for (std::uint64_t i = 0; i < 1'000'000; ++i) ring.send({i, static_cast<double>(i) * 0.5});
  ring.close();
  return 0;
}

int big_producer(const std::string& name) {
  auto ring = ptk::shm_ring<std::vector<char>>::open(name);
  for (int i = 0; i < 64; ++i) {
    auto slot = ring.prepare(1 << 20);  // 1 MiB, written in place
    std::memset(slot.bytes().data(), 'a' + i % 26, slot.bytes().size());
    slot.commit();
  }
  ring.close();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 && std::string(argv[1]) == "producer") return producer(argv[2]);
  if (argc > 2 && std::string(argv[1]) == "big") return big_producer(argv[2]);

  const std::string name = "ptk-example-17-" + std::to_string(::getpid());
  auto ring = ptk::shm_ring<reading>::create(name, 4096);  // unlinked when `ring` goes
  std::printf("1. /dev/shm%s: %zu slots of %zu bytes\n", ring.segment().name().c_str(),
              ring.capacity(), sizeof(reading));

  const auto start = std::chrono::steady_clock::now();
  auto child = ptk::spawn(ptk::command{"/proc/self/exe"}.args({"producer", name}));
  std::uint64_t count = 0;
  double sum = 0;
  while (auto r = ring.recv()) {  // until the producer closes
    if (r->seq != count)
      std::printf("  out of order at %llu!\n", static_cast<unsigned long long>(count));
    sum += r->value;
    ++count;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("2. received %llu readings from pid %d in order (sum %.0f): %.1f M messages/s\n",
              static_cast<unsigned long long>(count), child.pid(), sum,
              static_cast<double>(count) / s / 1e6);
  std::printf("   producer %s\n", child.wait().to_string().c_str());

  const std::string big_name = name + "-big";
  auto big = ptk::shm_ring<std::vector<char>>::create(big_name, 8 << 20);
  auto big_child = ptk::spawn(ptk::command{"/proc/self/exe"}.args({"big", big_name}));
  std::size_t bytes = 0, messages = 0;
  for (;;) {
    auto view = big.peek();  // read in place; released at the end of the scope
    if (!view) break;
    bytes += view.bytes().size();
    ++messages;
  }
  std::printf(
      "3. %zu messages of 1 MiB (%zu MiB) through prepare/commit and peek, no copies in between\n",
      messages, bytes >> 20);
  std::printf("   producer %s\n", big_child.wait().to_string().c_str());
  return 0;
}
