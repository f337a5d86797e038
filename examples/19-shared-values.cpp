// 19 — shared values and arrays updated by several processes (Value and Array).
//
// ptk::shared_value<T> is one T in shared memory: integers get lock-free atomic
// operations; any T can be updated under the value's process-shared lock, whose
// owner may even die without wedging the others. ptk::shared_array<T> is a fixed
// array: one writer per element needs no lock at all.
#include <ptk/ipc.hpp>
#include <ptk/process.hpp>

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {

struct stats {
  long count;
  double total;
  double max;
};

int child(const std::string& base, int index) {
  auto hits = ptk::shared_value<long>::open(base + "-hits");
  auto summary = ptk::shared_value<stats>::open(base + "-stats");
  auto squares = ptk::shared_array<long>::open(base + "-squares");
  for (int i = 0; i < 10000; ++i) hits.fetch_add(1);  // atomic, no lock
  for (int i = 0; i < 100; ++i) {
    const double sample = index * 100 + i;
    summary.update([&](stats& s) {  // several fields, one consistent update
      ++s.count;
      s.total += sample;
      if (sample > s.max) s.max = sample;
    });
  }
  for (std::size_t i = static_cast<std::size_t>(index); i < squares.size(); i += 4) {
    squares[i] = static_cast<long>(i * i);  // each element has one writer
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 3 && std::string(argv[1]) == "child") return child(argv[2], std::stoi(argv[3]));

  const std::string base = "ptk-example-19-" + std::to_string(::getpid());
  auto hits = ptk::shared_value<long>::create(base + "-hits", 0);
  auto summary = ptk::shared_value<stats>::create(base + "-stats", stats{0, 0, 0});
  auto squares = ptk::shared_array<long>::create(base + "-squares", 20);

  std::vector<ptk::process> kids;
  for (int k = 0; k < 4; ++k) {
    kids.push_back(
        ptk::spawn(ptk::command{"/proc/self/exe"}.args({"child", base, std::to_string(k)})));
  }
  for (auto& k : kids) k.wait();
  std::printf("1. 4 processes x 10000 fetch_add: hits = %ld (expected 40000)\n", hits.load());
  const stats s = summary.load();
  std::printf("2. 400 locked updates of a struct: count %ld, mean %.1f, max %.0f\n", s.count,
              s.total / static_cast<double>(s.count), s.max);
  std::printf("3. array written element by element by 4 processes:");
  for (long v : squares.span()) std::printf(" %ld", v);
  std::puts("");
  return 0;
}
