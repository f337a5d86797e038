// The work ptk-server runs: on threads, on the thread pool, and (registered with
// PTK_REMOTE in tasks.cpp) in the worker processes of the process pool.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>

namespace server::tasks {

/// Naive recursive Fibonacci: pure CPU.
inline long long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

/// Trial division: pure CPU.
inline bool is_prime(long long n) {
  if (n < 2) return false;
  for (long long d = 2; d * d <= n; ++d) {
    if (n % d == 0) return false;
  }
  return true;
}

/// Primes below n.
inline long long prime_count(long long n) {
  long long count = 0;
  for (long long i = 2; i < n; ++i) count += is_prime(i) ? 1 : 0;
  return count;
}

/// Sleeps (I/O-like waiting), returning early if `stop` is requested.
/// @return the milliseconds actually slept.
inline long long sleep_ms(long long ms, std::stop_token stop = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  cv.wait_for(lock, stop, std::chrono::milliseconds(ms), [] { return false; });
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               t0)
      .count();
}

/// Busy CPU for `ms` milliseconds (or until stopped). @return primes found meanwhile.
inline long long spin_ms(long long ms, std::stop_token stop = {}) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  long long found = 0;
  for (long long i = 2; !stop.stop_requested() && std::chrono::steady_clock::now() < end; ++i) {
    found += is_prime(i) ? 1 : 0;
  }
  return found;
}

// Process-pool entry points (one argument each; registered in tasks.cpp).
long long remote_fib(int n);
long long remote_prime_count(long long n);
long long remote_sleep(long long ms);
long long remote_crash(int how);

}  // namespace server::tasks
