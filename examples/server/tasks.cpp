#include "tasks.hpp"

#include <ptk/process_pool.hpp>

#include <csignal>

namespace server::tasks {

long long remote_fib(int n) { return fib(n); }
long long remote_prime_count(long long n) { return prime_count(n); }
long long remote_sleep(long long ms) { return sleep_ms(ms); }
long long remote_crash(int how) {
  // A real crash of the worker process: the pool reports it and starts a new worker.
  std::raise(how == 0 ? SIGSEGV : SIGABRT);
  return -1;
}

PTK_REMOTE(remote_fib);
PTK_REMOTE(remote_prime_count);
PTK_REMOTE(remote_sleep);
PTK_REMOTE(remote_crash);

}  // namespace server::tasks
