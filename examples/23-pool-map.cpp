// 23 — process_pool::map: one function over many inputs, results in input order.
//
// map(f, inputs) is Python's Executor.map: it submits f(x) for every x, lets the
// workers run them in parallel, and returns the results in the order of the
// inputs, whichever finished first. Inputs and results may be any type with a
// ptk::codec: numbers, std::string, std::vector of those, or your own types.
// If a task fails, map waits for the others and throws the first failure in input
// order; use submit() to handle each failure separately.
#include <ptk/process_pool.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

// How many primes are below n (deliberately naive: CPU-bound).
int primes_below(int n) {
  int count = 0;
  for (int k = 2; k < n; ++k) {
    bool prime = true;
    for (int d = 2; d * d <= k; ++d) {
      if (k % d == 0) {
        prime = false;
        break;
      }
    }
    count += prime ? 1 : 0;
  }
  return count;
}
PTK_REMOTE(primes_below);

// A string in, a vector of strings out: the distinct words, sorted.
std::vector<std::string> distinct_words(const std::string& text) {
  std::istringstream in(text);
  std::set<std::string> words;
  for (std::string w; in >> w;) words.insert(w);
  return {words.begin(), words.end()};
}
PTK_REMOTE(distinct_words);

int worker_pid(int) { return static_cast<int>(::getpid()); }
PTK_REMOTE(worker_pid);

}  // namespace

int main() {
  ptk::process_pool::serve_if_worker();  // in a worker: serve tasks here, never return

  ptk::process_pool pool{{.workers = 2}};

  const std::vector<int> limits = {200000, 10, 100, 1000, 50000, 2};
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int> counts = pool.map(primes_below, limits);
  const auto took = std::chrono::steady_clock::now() - t0;
  std::printf("primes below n, in input order (the first input is the slowest):\n");
  for (std::size_t i = 0; i < limits.size(); ++i)
    std::printf("  n = %6d: %5d primes\n", limits[i], counts[i]);
  std::printf("  (%.1f ms on %zu worker processes)\n\n",
              std::chrono::duration<double, std::milli>(took).count(), pool.size());

  const std::vector<std::string> texts = {"the cat sat on the mat", "to be or not to be",
                                          "a a a b"};
  const auto words = pool.map(distinct_words, texts);
  std::printf("distinct words of each text:\n");
  for (std::size_t i = 0; i < texts.size(); ++i) {
    std::printf("  \"%s\" ->", texts[i].c_str());
    for (const auto& w : words[i]) std::printf(" %s", w.c_str());
    std::printf("\n");
  }

  const auto pids = pool.map(worker_pid, std::vector<int>(40, 0));
  const std::set<int> distinct(pids.begin(), pids.end());
  std::printf("\n40 tiny tasks ran in %zu different worker processes (none of them this one: %s)\n",
              distinct.size(),
              distinct.count(static_cast<int>(::getpid())) == 0 ? "right" : "WRONG");
  return counts[0] == 17984 && distinct.count(static_cast<int>(::getpid())) == 0 ? 0 : 1;
}
