// IPC: ptk's channels next to the queues and raw mechanisms users compare them with.
//
// In-process SPSC throughput against moodycamel::ReaderWriterQueue and
// boost::lockfree::spsc_queue; cross-process round trips against a raw shared-memory
// spin ping-pong and a raw futex ping-pong (the floors); bandwidth against a
// socketpair and memcpy; the MPMC queue across processes against Boost.Interprocess
// message_queue (and a bare Vyukov queue in shared memory, the floor), and between
// threads against moodycamel::ConcurrentQueue (plain and blocking) and
// boost::lockfree::queue; the typed pipe against a raw pipe. Peer processes are
// forked children that only run the loop shown (no test framework, no allocation
// beyond the channel's).
#include <ptk/detail/atomic.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/detail/unique_fd.hpp>
#include <ptk/ipc.hpp>

#include <benchmark/benchmark.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <latch>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#if PTK_BENCH_HAVE_MOODYCAMEL
#include <readerwriterqueue/readerwriterqueue.h>
#endif
#if PTK_BENCH_HAVE_CONCURRENTQUEUE
#include <concurrentqueue/blockingconcurrentqueue.h>
#include <concurrentqueue/concurrentqueue.h>
#endif
#if PTK_BENCH_HAVE_BOOST
#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/lockfree/queue.hpp>
#include <boost/lockfree/spsc_queue.hpp>
#endif

#include "compare.hpp"

namespace {

using ptk::channel_status;

template <class F>
pid_t fork_peer(F body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    body();
    ::_exit(0);
  }
  return pid;
}

void reap(pid_t pid) { ::waitpid(pid, nullptr, 0); }

double median_of(std::vector<double>& v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

template <class F>
double time_ns(F f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
}

// ---- in-process SPSC throughput, 8-byte items ------------------------------------

constexpr std::uint64_t spsc_items = 1 << 20;

// spsc_items through a queue from a producer thread to this one.
template <class Push, class Pop>
void spsc_once(Push push, Pop pop) {
  // The producer works on its own copy of `push` (which refers to the queue): read
  // through a reference, it would share a cache line with the consumer's loop
  // counters on this stack and measure false sharing, not the queue.
  std::thread producer([push]() mutable {
    for (std::uint64_t i = 0; i < spsc_items;) {
      if (push(i)) {
        ++i;
      } else {
        ptk::detail::cpu_relax();
      }
    }
  });
  std::uint64_t sum = 0;
  for (std::uint64_t got = 0; got < spsc_items;) {
    std::uint64_t v;
    if (pop(v)) {
      sum += v;
      ++got;
    } else {
      ptk::detail::cpu_relax();
    }
  }
  producer.join();
  benchmark::DoNotOptimize(sum);
}

// One run through each queue, a new queue every time.
template <ptk::ring_layout L>
void spsc_ptk_once() {
  auto ring = ptk::shm_ring<std::uint64_t, L>::anonymous(4096);
  spsc_once([&](std::uint64_t v) { return ring.try_send(v) == channel_status::ok; },
            [&](std::uint64_t& v) {
              auto r = ring.try_recv();
              if (!r) return false;
              v = *r;
              return true;
            });
}
#if PTK_BENCH_HAVE_MOODYCAMEL
void spsc_moodycamel_once() {
  moodycamel::ReaderWriterQueue<std::uint64_t> q(4096);
  spsc_once([&](std::uint64_t v) { return q.try_enqueue(v); },
            [&](std::uint64_t& v) { return q.try_dequeue(v); });
}
#endif
#if PTK_BENCH_HAVE_BOOST
void spsc_boost_once() {
  auto q = std::make_unique<
      boost::lockfree::spsc_queue<std::uint64_t, boost::lockfree::capacity<4096>>>();
  spsc_once([&](std::uint64_t v) { return q->push(v); },
            [&](std::uint64_t& v) { return q->pop(v); });
}
#endif

template <void (*Once)()>
void BM_spsc(benchmark::State& state) {
  for (auto _ : state) Once();
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(spsc_items));
}

// The three in turn within one loop, each with a new queue every time, so all see
// the same machine load and the same mix of thread placements (which move the
// separate rows by 1.3x from one run to the next here); each reports its median.
void BM_spsc_interleaved(benchmark::State& state) {
  std::vector<double> ptk_times;
#if PTK_BENCH_HAVE_MOODYCAMEL
  std::vector<double> moodycamel_times;
#endif
#if PTK_BENCH_HAVE_BOOST
  std::vector<double> boost_times;
#endif
  for (auto _ : state) {
    ptk_times.push_back(time_ns(spsc_ptk_once<ptk::ring_layout::packed>));
#if PTK_BENCH_HAVE_MOODYCAMEL
    moodycamel_times.push_back(time_ns(spsc_moodycamel_once));
#endif
#if PTK_BENCH_HAVE_BOOST
    boost_times.push_back(time_ns(spsc_boost_once));
#endif
  }
  state.counters["metric"] = median_of(ptk_times);
#if PTK_BENCH_HAVE_MOODYCAMEL
  state.counters["peer:moodycamel_rwq"] = median_of(moodycamel_times);
#endif
#if PTK_BENCH_HAVE_BOOST
  state.counters["peer:boost_spsc_queue"] = median_of(boost_times);
#endif
}

// ---- cross-process round trips -----------------------------------------------------

constexpr std::uint64_t stop_word = ~std::uint64_t{0};

// Each round-trip peer below is a child process echoing numbers back;
// round_trip() sends the next number and waits for it to come back (false when
// something else came back), and the destructor stops and reaps the child.

// A pair of shm_rings, ping and pong, polling `spin` times before sleeping.
template <ptk::ring_layout L = ptk::ring_layout::packed>
class ring_echo {
 public:
  explicit ring_echo(int spin) {
    ping_.set_spin(spin);  // before the fork: the child's handles inherit it
    pong_.set_spin(spin);
    child_ = fork_peer([&] {
      for (;;) {
        auto v = ping_.recv();
        if (!v || *v == stop_word) return;
        pong_.send(*v);
      }
    });
  }
  ring_echo(const ring_echo&) = delete;
  ring_echo& operator=(const ring_echo&) = delete;
  ~ring_echo() {
    ping_.send(stop_word);
    reap(child_);
  }
  bool round_trip() {
    ping_.send(++i_);
    auto r = pong_.recv();
    return r && *r == i_;
  }

 private:
  using ring = ptk::shm_ring<std::uint64_t, L>;
  ring ping_ = ring::anonymous(16);
  ring pong_ = ring::anonymous(16);
  pid_t child_ = -1;
  std::uint64_t i_ = 0;
};

struct alignas(64) shared_words {
  alignas(64) std::atomic<std::uint64_t> ping;
  alignas(64) std::atomic<std::uint64_t> pong;
  alignas(64) ptk::detail::futex_word fping;
  alignas(64) ptk::detail::futex_word fpong;
};

// Two words in shared memory, one for each direction: the floors.
class words_echo {
 public:
  words_echo() {
    void* p = ::mmap(nullptr, sizeof(shared_words), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    w_ = new (p) shared_words{};
  }
  words_echo(const words_echo&) = delete;
  words_echo& operator=(const words_echo&) = delete;
  ~words_echo() { ::munmap(w_, sizeof *w_); }

 protected:
  shared_words* w_ = nullptr;
  pid_t child_ = -1;
};

// Both sides spin on the other's word: the floor of a polling round trip.
class spin_echo : words_echo {
 public:
  spin_echo() {
    child_ = fork_peer([w = w_] {
      std::uint64_t seen = 0;
      for (;;) {
        std::uint64_t v;
        while ((v = w->ping.load(std::memory_order_acquire)) == seen) ptk::detail::cpu_relax();
        if (v == stop_word) return;
        seen = v;
        w->pong.store(v, std::memory_order_release);
      }
    });
  }
  ~spin_echo() {
    w_->ping.store(stop_word, std::memory_order_release);
    reap(child_);
  }
  bool round_trip() {
    w_->ping.store(++i_, std::memory_order_release);
    while (w_->pong.load(std::memory_order_acquire) != i_) ptk::detail::cpu_relax();
    return true;
  }

 private:
  std::uint64_t i_ = 0;
};

// Both sides sleep on a futex and wake the other every time: the floor of a
// sleeping round trip.
class futex_echo : words_echo {
 public:
  futex_echo() {
    child_ = fork_peer([w = w_] {
      std::uint32_t seen = 0;
      for (;;) {
        std::uint32_t v;
        while ((v = w->fping.load(std::memory_order_acquire)) == seen)
          ptk::detail::futex_wait(w->fping, seen);
        if (v == 0xffffffffU) return;
        seen = v;
        w->fpong.store(v, std::memory_order_release);
        ptk::detail::futex_wake(w->fpong);
      }
    });
  }
  ~futex_echo() {
    w_->fping.store(0xffffffffU, std::memory_order_release);
    ptk::detail::futex_wake(w_->fping);
    reap(child_);
  }
  bool round_trip() {
    w_->fping.store(++i_, std::memory_order_release);
    ptk::detail::futex_wake(w_->fping);
    std::uint32_t v;
    while ((v = w_->fpong.load(std::memory_order_acquire)) != i_)
      ptk::detail::futex_wait(w_->fpong, v);
    return true;
  }

 private:
  std::uint32_t i_ = 0;
};

template <class Echo, class... Args>
void round_trips(benchmark::State& state, Args... args) {
  Echo e(args...);
  for (auto _ : state) {
    if (!e.round_trip()) state.SkipWithError("lost a message");
  }
}

// The default-waiting ring, in either layout (see ptk::ring_layout).
template <ptk::ring_layout L>
void BM_roundtrip_ptk(benchmark::State& state) {
  round_trips<ring_echo<L>>(state, ptk::detail::spin_rounds);
}
void BM_roundtrip_sleep_ptk(benchmark::State& state) { round_trips<ring_echo<>>(state, 0); }
void BM_roundtrip_raw_spin(benchmark::State& state) { round_trips<spin_echo>(state); }
void BM_roundtrip_raw_futex(benchmark::State& state) { round_trips<futex_echo>(state); }

// Times `n` round trips through a fresh Echo (new shared memory, a new child) after
// `warmup` untimed ones; nanoseconds per round trip, or a negative value if a
// message came back wrong.
template <class Echo, class... Args>
double fresh_round_trips(int warmup, int n, Args... args) {
  Echo e(args...);
  bool ok = true;
  for (int k = 0; k < warmup; ++k) ok = e.round_trip() && ok;
  const double t = time_ns([&] {
    for (int k = 0; k < n; ++k) ok = e.round_trip() && ok;
  });
  return ok ? t / n : -1;
}

// A ptk round trip and a peer's in turn, each iteration with fresh ones: new shared
// memory or descriptors and a new child for both, one child at a time. On this VM a
// round trip's cost depends on where things land: for a polling one, which cache
// slices home the lines it bounces (two pairs measured at the same moment differed
// by up to 1.9x, either way); for a sleeping one, whether the child shares the
// parent's vCPU (about 3 us) or wakes on the other one (25 us and more). One pair
// measures one placement and keeps it; fresh pairs average over placements. Each
// side reports its median, in nanoseconds per round trip.
template <class Ptk, class Peer>
void fresh_pairs(benchmark::State& state, const char* peer_name, Ptk ptk_side, Peer peer) {
  std::vector<double> ptk_times, peer_times;
  for (auto _ : state) {
    ptk_times.push_back(ptk_side());
    peer_times.push_back(peer());
    if (ptk_times.back() < 0 || peer_times.back() < 0) state.SkipWithError("lost a message");
  }
  state.counters["metric"] = median_of(ptk_times);
  state.counters[std::string("peer:") + peer_name] = median_of(peer_times);
}

// The default-waiting ring, in either layout, against the spin floor.
template <ptk::ring_layout L>
void BM_roundtrip_spin_fresh_pairs(benchmark::State& state) {
  fresh_pairs(
      state, "raw_shm_spin",
      [] { return fresh_round_trips<ring_echo<L>>(1000, 5000, ptk::detail::spin_rounds); },
      [] { return fresh_round_trips<spin_echo>(1000, 5000); });
}

// The ring that sleeps at once against the futex floor.
void BM_roundtrip_sleeping_fresh_pairs(benchmark::State& state) {
  fresh_pairs(
      state, "raw_futex", [] { return fresh_round_trips<ring_echo<>>(20, 200, 0); },
      [] { return fresh_round_trips<futex_echo>(20, 200); });
}

// ---- bandwidth, 4 KiB messages across processes ------------------------------------

using page = std::array<std::byte, 4096>;

void BM_bandwidth_4k_ptk(benchmark::State& state) {
  auto ring = ptk::shm_ring<page>::anonymous(256);
  const pid_t child = fork_peer([&] {
    page p{};
    for (std::uint64_t i = 0;; ++i) {
      std::memcpy(p.data(), &i, sizeof i);
      if (ring.send(p) != channel_status::ok) return;
    }
  });
  for (auto _ : state) {
    auto r = ring.recv();
    benchmark::DoNotOptimize(r);
  }
  ring.close();
  reap(child);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(sizeof(page)));
}

void BM_bandwidth_4k_socketpair(benchmark::State& state) {
  int sv[2];
  ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
  const pid_t child = fork_peer([&] {
    ::close(sv[0]);
    page p{};
    for (std::uint64_t i = 0;; ++i) {
      std::memcpy(p.data(), &i, sizeof i);
      std::size_t off = 0;
      while (off < p.size()) {
        const ssize_t w = ::send(sv[1], p.data() + off, p.size() - off, MSG_NOSIGNAL);
        if (w <= 0) return;
        off += static_cast<std::size_t>(w);
      }
    }
  });
  ::close(sv[1]);
  page p;
  for (auto _ : state) {
    std::size_t off = 0;
    while (off < p.size()) {
      const ssize_t r = ::read(sv[0], p.data() + off, p.size() - off);
      if (r <= 0) break;
      off += static_cast<std::size_t>(r);
    }
    benchmark::DoNotOptimize(p);
  }
  ::close(sv[0]);
  reap(child);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(sizeof(page)));
}

// ---- bandwidth, 1 MiB messages through the loan API --------------------------------

constexpr std::size_t mib = std::size_t{1} << 20;

void BM_bandwidth_1m_ptk_loan(benchmark::State& state) {
  // Four messages of ring (three fit, with their headers): producer and consumer
  // stay within their cores' L2 caches (2 MiB each here) instead of streaming 8 MiB.
  auto ring = ptk::shm_ring<std::vector<std::byte>>::anonymous(4 * mib);
  std::vector<std::byte> src(mib, std::byte{1}), dst(mib);
  const pid_t child = fork_peer([&] {
    for (;;) {
      auto slot = ring.prepare(mib);
      if (!slot) return;
      std::memcpy(slot.bytes().data(), src.data(), mib);
      slot.commit();
    }
  });
  for (auto _ : state) {
    auto v = ring.peek();
    std::memcpy(dst.data(), v.bytes().data(), v.bytes().size());
    benchmark::DoNotOptimize(dst.data());
  }
  ring.close();
  reap(child);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(mib));
}

// The floor for the loan row: the same two copies through shared memory with no
// channel at all (two page-aligned buffers, a published count and an acknowledged
// count, both sides spinning). Each 1 MiB crosses cores through the shared cache,
// so this runs at about half a single-thread memcpy on its own.
void BM_bandwidth_1m_raw_two_buffers(benchmark::State& state) {
  struct counts {
    alignas(64) std::atomic<std::uint64_t> published{0};
    alignas(64) std::atomic<std::uint64_t> consumed{0};
    alignas(64) std::atomic<bool> stop{false};
  };
  constexpr std::size_t stride = mib + 4096;
  const std::size_t bytes = 4096 + 2 * stride;
  void* m = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* c = new (m) counts{};
  std::byte* buffers = static_cast<std::byte*>(m) + 4096;
  std::vector<std::byte> src(mib, std::byte{1}), dst(mib);
  const pid_t child = fork_peer([&] {
    for (std::uint64_t i = 0;; ++i) {
      while (i - c->consumed.load(std::memory_order_acquire) >= 2) {
        if (c->stop.load(std::memory_order_relaxed)) return;
        ptk::detail::cpu_relax();
      }
      std::memcpy(buffers + (i % 2) * stride, src.data(), mib);
      c->published.store(i + 1, std::memory_order_release);
    }
  });
  std::uint64_t i = 0;
  for (auto _ : state) {
    while (c->published.load(std::memory_order_acquire) <= i) ptk::detail::cpu_relax();
    std::memcpy(dst.data(), buffers + (i % 2) * stride, mib);
    benchmark::DoNotOptimize(dst.data());
    c->consumed.store(++i, std::memory_order_release);
  }
  c->stop.store(true);
  reap(child);
  ::munmap(m, bytes);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(mib));
}

void BM_bandwidth_1m_memcpy(benchmark::State& state) {
  std::vector<std::byte> src(mib, std::byte{1}), dst(mib);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), mib);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(mib));
}

// ---- MPMC: 2 producer and 2 consumer processes, 64-byte messages -------------------
// Each side gets the same work: 100000 messages of 64 bytes from two producer
// processes to two consumer processes through a queue of 1024 messages, created and
// torn down (with its four processes) in every iteration. The time is the message
// flow's: from the moment all four processes are ready to the moment the last
// consumer is done. The forks and the reaping (about 0.7 ms for the four, the same
// for every side) and the queue's creation stay out of it.

using msg64 = std::array<char, 64>;
constexpr int mpmc_messages = 100000;
constexpr int mpmc_capacity = 1024;

// A pipe the parent and its children signal each other through, a byte per signal.
class signal_pipe {
 public:
  void post(int n = 1) const {
    const char b = 0;
    for (int i = 0; i < n; ++i) check(::write(fds_.second.get(), &b, 1));
  }
  void take(int n = 1) const {
    char b = 0;
    for (int i = 0; i < n; ++i) check(::read(fds_.first.get(), &b, 1));
  }

 private:
  static void check(ssize_t r) {
    if (r != 1) throw std::system_error(errno, std::generic_category(), "signal_pipe");
  }
  ptk::detail::fd_pair fds_ = ptk::detail::make_pipe();
};

// Forks two producers running `produce` and two consumers running `consume`, starts
// them together once all four are ready, runs `finish` in this process once both
// producers are done (to close the queue), and returns the nanoseconds from the start
// to the end of the last consumer.
template <class Produce, class Consume, class Finish>
double mpmc_flow_ns(Produce produce, Consume consume, Finish finish) {
  const signal_pipe ready, go, produced, consumed;
  const auto role = [&](auto body, const signal_pipe& done) {
    return fork_peer([&] {
      ready.post();
      go.take();
      body();
      done.post();
    });
  };
  std::vector<pid_t> children;
  for (int p = 0; p < 2; ++p) children.push_back(role(produce, produced));
  for (int c = 0; c < 2; ++c) children.push_back(role(consume, consumed));
  ready.take(4);
  const auto t0 = std::chrono::steady_clock::now();
  go.post(4);
  produced.take(2);
  finish();
  consumed.take(2);
  const auto t1 = std::chrono::steady_clock::now();
  for (auto pid : children) reap(pid);
  return std::chrono::duration<double, std::nano>(t1 - t0).count();
}

// Reports the message flow's time (see mpmc_flow_ns) as the iteration's time.
template <class Once>
void mpmc_rows(benchmark::State& state, Once once) {
  for (auto _ : state) state.SetIterationTime(once() / 1e9);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * mpmc_messages);
}

// How the floor and the queues without waiting of their own wait: 20 CPU pauses,
// then a sched_yield() per attempt.
void raw_backoff(int& spins) {
  if (++spins > 20) {
    ::sched_yield();
  } else {
    ptk::detail::cpu_relax();
  }
}

// What a producer sends: message i of its half, numbered in its first byte, through
// `try_send`, waiting with raw_backoff while it fails.
template <class TrySend>
void produce_half(TrySend try_send) {
  msg64 m{};
  for (int i = 0; i < mpmc_messages / 2; ++i) {
    m[0] = static_cast<char>(i);
    for (int spins = 0; !try_send(m);) raw_backoff(spins);
  }
}

// Sends a producer's half through ptk's blocking send.
void send_half(ptk::queue<msg64>& q) {
  produce_half([&](const msg64& m) {
    q.send(m);
    return true;
  });
}

double mpmc_ptk_once() {
  auto q = ptk::queue<msg64>::anonymous(mpmc_capacity);
  return mpmc_flow_ns([&] { send_half(q); },
                      [&] {
                        while (auto m = q.recv()) benchmark::DoNotOptimize(m);
                      },
                      [&] { q.close(); });
}

void BM_mpmc_ptk(benchmark::State& state) { mpmc_rows(state, mpmc_ptk_once); }

#if PTK_BENCH_HAVE_BOOST
double mpmc_boost_once(const std::string& name) {
  namespace bip = boost::interprocess;
  bip::message_queue::remove(name.c_str());
  bip::message_queue q(bip::create_only, name.c_str(), mpmc_capacity, sizeof(msg64));
  return mpmc_flow_ns(
      [&] {
        produce_half([&](const msg64& m) {
          q.send(m.data(), m.size(), 0);
          return true;
        });
      },
      [&] {
        msg64 m{};
        bip::message_queue::size_type got = 0;
        unsigned prio = 0;
        for (;;) {
          q.receive(m.data(), m.size(), got, prio);
          if (m[1] == 'S') return;  // the parent's "stop" message, after all the others
        }
      },
      [&] {
        msg64 stop{};
        stop[1] = 'S';
        q.send(stop.data(), stop.size(), 0);  // same priority: behind every queued message
        q.send(stop.data(), stop.size(), 0);
      });
}

void BM_mpmc_boost_interprocess(benchmark::State& state) {
  const std::string name = "ptk-bench-mq-" + std::to_string(::getpid());
  mpmc_rows(state, [&] { return mpmc_boost_once(name); });
  boost::interprocess::message_queue::remove(name.c_str());
}
#endif

// The floor: a bare Vyukov bounded MPMC queue in shared memory (one compare-exchange
// and one store per message on each side, waiting by spinning and yielding), with
// none of ptk::queue's guarantees: no crash recovery, no sleeping, no peer loss.
struct raw_mpmc {
  struct cell {
    std::atomic<std::uint64_t> seq;
    msg64 m;
  };
  alignas(64) std::atomic<std::uint64_t> tail;
  alignas(64) std::atomic<std::uint64_t> head;
  alignas(64) std::atomic<std::uint32_t> closed;
  alignas(64) cell cells[mpmc_capacity];
};

double mpmc_raw_once() {
  void* mem =
      ::mmap(nullptr, sizeof(raw_mpmc), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* q = new (mem) raw_mpmc{};
  for (std::uint64_t i = 0; i < mpmc_capacity; ++i) q->cells[i].seq.store(i);
  const double ns = mpmc_flow_ns(
      [&] {
        msg64 m{};
        for (int i = 0; i < mpmc_messages / 2; ++i) {
          m[0] = static_cast<char>(i);
          std::uint64_t pos = q->tail.load(std::memory_order_relaxed);
          int spins = 0;
          for (;;) {
            auto& c = q->cells[pos % mpmc_capacity];
            const auto d = static_cast<std::int64_t>(c.seq.load(std::memory_order_acquire) - pos);
            if (d == 0 && q->tail.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
              c.m = m;
              c.seq.store(pos + 1, std::memory_order_release);
              break;
            }
            if (d < 0) raw_backoff(spins);
            if (d != 0) pos = q->tail.load(std::memory_order_relaxed);
          }
        }
      },
      [&] {
        msg64 m{};
        for (;;) {
          std::uint64_t pos = q->head.load(std::memory_order_relaxed);
          int spins = 0;
          for (;;) {
            auto& cl = q->cells[pos % mpmc_capacity];
            const auto d =
                static_cast<std::int64_t>(cl.seq.load(std::memory_order_acquire) - (pos + 1));
            if (d == 0 && q->head.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
              m = cl.m;
              cl.seq.store(pos + mpmc_capacity, std::memory_order_release);
              break;
            }
            if (d < 0) {
              if (q->closed.load(std::memory_order_acquire) != 0) return;
              raw_backoff(spins);
            }
            if (d != 0) pos = q->head.load(std::memory_order_relaxed);
          }
          benchmark::DoNotOptimize(m);
        }
      },
      [&] { q->closed.store(1, std::memory_order_release); });
  ::munmap(mem, sizeof(raw_mpmc));
  return ns;
}

// ptk, Boost and the raw floor in turn within one loop, so that all three see the
// same machine load at the same moments (a busy 2-core machine moves the separate
// rows above by 2x from one minute to the next); each reports its median.
void BM_mpmc_interleaved(benchmark::State& state) {
  std::vector<double> ptk_times, raw_times;
#if PTK_BENCH_HAVE_BOOST
  const std::string name = "ptk-bench-mq-" + std::to_string(::getpid());
  std::vector<double> boost_times;
#endif
  for (auto _ : state) {
    ptk_times.push_back(mpmc_ptk_once());
#if PTK_BENCH_HAVE_BOOST
    boost_times.push_back(mpmc_boost_once(name));
#endif
    raw_times.push_back(mpmc_raw_once());
  }
  state.counters["metric"] = median_of(ptk_times);
#if PTK_BENCH_HAVE_BOOST
  boost::interprocess::message_queue::remove(name.c_str());
  state.counters["peer:boost_message_queue"] = median_of(boost_times);
#endif
  state.counters["peer:raw_vyukov_floor"] = median_of(raw_times);
}

// ---- MPMC between threads: 2 producer and 2 consumer threads, 64-byte messages -----
// The processes' work above (100000 messages of 64 bytes, 1024 slots) between four
// threads of one process, against the in-process MPMC queues users know:
// - moodycamel::ConcurrentQueue, used the fast way its documentation gives: a
//   ProducerToken or ConsumerToken per thread, enqueue and try_dequeue (pausing and
//   then yielding while it finds nothing, as the floor above does). Its enqueue is
//   unbounded (it allocates more blocks instead of waiting), so its senders never
//   wait where ptk's, bounded to 1024 messages, do. Its bounded form, try_enqueue
//   with tokens, sometimes never finished here (a run stalled for over a minute);
//   the tokenless try_enqueue finishes, in about twice the time of this row;
// - moodycamel::BlockingConcurrentQueue, the same with receivers sleeping in
//   wait_dequeue;
// - boost::lockfree::queue, bounded to 1024 like ptk: push and pop, pausing and
//   yielding while they fail.
// moodycamel orders messages per producer only, so a receiver of the blocking queue
// can meet a "stop" before other messages: what is left once both receivers have
// stopped is drained by the timing thread, inside the measured time.

// Starts two producer threads running `produce` and two consumer threads running
// `consume` together, runs `finish` once both producers are done (to stop the
// consumers) and `drain` once both consumers are done, and returns the nanoseconds
// from the start to the end of `drain`. `consume` and `drain` return how many
// messages they took: every message must arrive once.
template <class Produce, class Consume, class Finish, class Drain>
double mpmc_threads_ns(Produce produce, Consume consume, Finish finish, Drain drain) {
  std::latch ready(4);
  std::latch go(1);
  std::atomic<int> received{0};
  std::vector<std::thread> producers;
  std::vector<std::thread> consumers;
  for (int p = 0; p < 2; ++p) {
    producers.emplace_back([&] {
      ready.arrive_and_wait();
      go.wait();
      produce();
    });
  }
  for (int c = 0; c < 2; ++c) {
    consumers.emplace_back([&] {
      ready.arrive_and_wait();
      go.wait();
      received.fetch_add(consume(), std::memory_order_relaxed);
    });
  }
  ready.wait();
  const auto t0 = std::chrono::steady_clock::now();
  go.count_down();
  for (auto& t : producers) t.join();
  finish();
  for (auto& t : consumers) t.join();
  const int total = received.load() + drain();
  const auto t1 = std::chrono::steady_clock::now();
  if (total != mpmc_messages) {
    throw std::logic_error("mpmc between threads: " + std::to_string(total) + " of " +
                           std::to_string(mpmc_messages) + " messages arrived");
  }
  return std::chrono::duration<double, std::nano>(t1 - t0).count();
}

// A receiver of a queue without waiting: pauses and yields while `try_recv` finds
// nothing, and stops once `done` is set and the queue is empty. Returns the count.
template <class TryRecv>
int consume_polling(TryRecv try_recv, const std::atomic<bool>& done) {
  msg64 m{};
  int n = 0;
  for (int spins = 0;;) {
    if (try_recv(m)) {
      benchmark::DoNotOptimize(m);
      ++n;
      spins = 0;
    } else if (done.load(std::memory_order_acquire)) {
      if (!try_recv(m)) return n;  // the producers finished before `done`
      ++n;
    } else {
      raw_backoff(spins);
    }
  }
}

double mpmc_threads_ptk_once() {
  ptk::queue<msg64> q(mpmc_capacity);
  return mpmc_threads_ns([&] { send_half(q); },
                         [&] {
                           int n = 0;
                           while (auto m = q.recv()) {
                             benchmark::DoNotOptimize(m);
                             ++n;
                           }
                           return n;
                         },
                         [&] { q.close(); }, [] { return 0; });
}

#if PTK_BENCH_HAVE_CONCURRENTQUEUE
template <class Queue>
int drain_all(Queue& q) {
  msg64 m{};
  int n = 0;
  while (q.try_dequeue(m)) n += m[1] == 'S' ? 0 : 1;
  return n;
}

// Sends a producer's half through a moodycamel queue with this thread's token.
template <class Queue>
void enqueue_half(Queue& q) {
  moodycamel::ProducerToken token(q);
  produce_half([&](const msg64& m) { return q.enqueue(token, m); });
}

double mpmc_threads_moodycamel_once() {
  moodycamel::ConcurrentQueue<msg64> q(mpmc_capacity);
  std::atomic<bool> done{false};
  return mpmc_threads_ns(
      [&] { enqueue_half(q); },
      [&] {
        moodycamel::ConsumerToken token(q);
        return consume_polling([&](msg64& m) { return q.try_dequeue(token, m); }, done);
      },
      [&] { done.store(true, std::memory_order_release); }, [&] { return drain_all(q); });
}

double mpmc_threads_moodycamel_blocking_once() {
  moodycamel::BlockingConcurrentQueue<msg64> q(mpmc_capacity);
  return mpmc_threads_ns([&] { enqueue_half(q); },
                         [&] {
                           moodycamel::ConsumerToken token(q);
                           msg64 m{};
                           int n = 0;
                           for (;;) {
                             q.wait_dequeue(token, m);
                             if (m[1] == 'S') return n;  // this thread's "stop"
                             ++n;
                           }
                         },
                         [&] {
                           msg64 stop{};
                           stop[1] = 'S';
                           q.enqueue(stop);
                           q.enqueue(stop);
                         },
                         [&] { return drain_all(q); });
}
#endif

#if PTK_BENCH_HAVE_BOOST
double mpmc_threads_boost_lockfree_once() {
  auto q =
      std::make_unique<boost::lockfree::queue<msg64, boost::lockfree::capacity<mpmc_capacity>>>();
  std::atomic<bool> done{false};
  return mpmc_threads_ns([&] { produce_half([&](const msg64& m) { return q->push(m); }); },
                         [&] { return consume_polling([&](msg64& m) { return q->pop(m); }, done); },
                         [&] { done.store(true, std::memory_order_release); }, [] { return 0; });
}
#endif

// ptk and its peers in turn within one loop (see BM_mpmc_interleaved); each reports
// its median.
void BM_mpmc_threads_interleaved(benchmark::State& state) {
  std::vector<double> ptk_times;
#if PTK_BENCH_HAVE_CONCURRENTQUEUE
  std::vector<double> moodycamel_times, moodycamel_blocking_times;
#endif
#if PTK_BENCH_HAVE_BOOST
  std::vector<double> boost_times;
#endif
  for (auto _ : state) {
    ptk_times.push_back(mpmc_threads_ptk_once());
#if PTK_BENCH_HAVE_CONCURRENTQUEUE
    moodycamel_times.push_back(mpmc_threads_moodycamel_once());
    moodycamel_blocking_times.push_back(mpmc_threads_moodycamel_blocking_once());
#endif
#if PTK_BENCH_HAVE_BOOST
    boost_times.push_back(mpmc_threads_boost_lockfree_once());
#endif
  }
  state.counters["metric"] = median_of(ptk_times);
#if PTK_BENCH_HAVE_CONCURRENTQUEUE
  state.counters["peer:moodycamel_cq"] = median_of(moodycamel_times);
  state.counters["peer:moodycamel_blocking_cq"] = median_of(moodycamel_blocking_times);
#endif
#if PTK_BENCH_HAVE_BOOST
  state.counters["peer:boost_lockfree_queue"] = median_of(boost_times);
#endif
}

// ---- typed pipe round trip ---------------------------------------------------------

// The typed pipe with an echo child.
class pipe_echo {
 public:
  pipe_echo() {
    auto [a, b] = ptk::pipe<std::uint64_t>::create();
    a_.emplace(std::move(a));
    child_ = fork_peer([&b = b] {
      while (auto v = b.recv()) {
        if (*v == stop_word) return;
        b.send(*v);
      }
    });
  }
  pipe_echo(const pipe_echo&) = delete;
  pipe_echo& operator=(const pipe_echo&) = delete;
  ~pipe_echo() {
    a_->send(stop_word);
    reap(child_);
  }
  bool round_trip() {
    a_->send(++i_);
    auto r = a_->recv();
    return r && *r == i_;
  }

 private:
  std::optional<ptk::pipe<std::uint64_t>> a_;
  pid_t child_ = -1;
  std::uint64_t i_ = 0;
};

// Two raw pipes, one each way: the floor.
class raw_pipe_echo {
 public:
  raw_pipe_echo() {
    ::pipe2(to_, O_CLOEXEC);
    ::pipe2(from_, O_CLOEXEC);
    child_ = fork_peer([this] {
      std::uint64_t v;
      while (::read(to_[0], &v, sizeof v) == sizeof v && v != stop_word) {
        if (::write(from_[1], &v, sizeof v) != sizeof v) return;
      }
    });
  }
  raw_pipe_echo(const raw_pipe_echo&) = delete;
  raw_pipe_echo& operator=(const raw_pipe_echo&) = delete;
  ~raw_pipe_echo() {
    const std::uint64_t stop = stop_word;
    (void)!::write(to_[1], &stop, sizeof stop);
    reap(child_);
    for (int fd : {to_[0], to_[1], from_[0], from_[1]}) ::close(fd);
  }
  bool round_trip() {
    ++i_;
    std::uint64_t v = 0;
    return ::write(to_[1], &i_, sizeof i_) == sizeof i_ &&
           ::read(from_[0], &v, sizeof v) == sizeof v && v == i_;
  }

 private:
  int to_[2] = {-1, -1};
  int from_[2] = {-1, -1};
  pid_t child_ = -1;
  std::uint64_t i_ = 0;
};

void BM_pipe_roundtrip_ptk(benchmark::State& state) { round_trips<pipe_echo>(state); }
void BM_pipe_roundtrip_raw_pipe(benchmark::State& state) { round_trips<raw_pipe_echo>(state); }

// The typed pipe against the raw pipe, over fresh pairs (see fresh_pairs).
void BM_pipe_roundtrip_fresh_pairs(benchmark::State& state) {
  fresh_pairs(
      state, "raw_pipe", [] { return fresh_round_trips<pipe_echo>(20, 200); },
      [] { return fresh_round_trips<raw_pipe_echo>(20, 200); });
}

// For reference: a SOCK_STREAM socket pair, the transport of Python's duplex
// multiprocessing.Pipe and of ptk::pipe before it moved to two kernel pipes (one
// descriptor and MSG_NOSIGNAL, but a wake-up that costs about three pipe round trips).
void BM_pipe_roundtrip_raw_socketpair(benchmark::State& state) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    state.SkipWithError("socketpair failed");
    return;
  }
  const pid_t child = fork_peer([&] {
    std::uint64_t v;
    while (::recv(sv[1], &v, sizeof v, MSG_WAITALL) == sizeof v && v != stop_word) {
      if (::send(sv[1], &v, sizeof v, MSG_NOSIGNAL) != sizeof v) return;
    }
  });
  std::uint64_t i = 0;
  for (auto _ : state) {
    ++i;
    std::uint64_t v = 0;
    if (::send(sv[0], &i, sizeof i, MSG_NOSIGNAL) != sizeof i ||
        ::recv(sv[0], &v, sizeof v, MSG_WAITALL) != sizeof v || v != i) {
      state.SkipWithError("raw socketpair failed");
    }
  }
  const std::uint64_t stop = stop_word;
  (void)!::send(sv[0], &stop, sizeof stop, MSG_NOSIGNAL);
  reap(child);
  ::close(sv[0]);
  ::close(sv[1]);
}

}  // namespace

BENCHMARK(BM_spsc<spsc_ptk_once<ptk::ring_layout::packed>>)
    ->Name("BM_spsc_8B_items/ptk_shm_ring")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_spsc<spsc_ptk_once<ptk::ring_layout::stamped>>)
    ->Name("BM_spsc_8B_items/ptk_shm_ring_stamped")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
#if PTK_BENCH_HAVE_MOODYCAMEL
BENCHMARK(BM_spsc<spsc_moodycamel_once>)
    ->Name("BM_spsc_8B_items/moodycamel_rwq")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
#endif
#if PTK_BENCH_HAVE_BOOST
BENCHMARK(BM_spsc<spsc_boost_once>)
    ->Name("BM_spsc_8B_items/boost_spsc_queue")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
#endif
BENCHMARK(BM_spsc_interleaved)
    ->Name("BM_spsc_8B_items_interleaved/ptk_shm_ring")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_roundtrip_ptk<ptk::ring_layout::packed>)
    ->Name("BM_xproc_roundtrip/ptk_shm_ring")
    ->UseRealTime();
BENCHMARK(BM_roundtrip_ptk<ptk::ring_layout::stamped>)
    ->Name("BM_xproc_roundtrip/ptk_shm_ring_stamped")
    ->UseRealTime();
BENCHMARK(BM_roundtrip_raw_spin)->Name("BM_xproc_roundtrip/raw_shm_spin")->UseRealTime();
BENCHMARK(BM_roundtrip_sleep_ptk)
    ->Name("BM_xproc_roundtrip_sleeping/ptk_shm_ring_no_spin")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_roundtrip_raw_futex)
    ->Name("BM_xproc_roundtrip_sleeping/raw_futex")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_bandwidth_4k_ptk)->Name("BM_xproc_4KiB_messages/ptk_shm_ring")->UseRealTime();
BENCHMARK(BM_bandwidth_4k_socketpair)->Name("BM_xproc_4KiB_messages/socketpair")->UseRealTime();
BENCHMARK(BM_bandwidth_1m_ptk_loan)
    ->Name("BM_1MiB_messages/ptk_shm_ring_loan_xproc")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_bandwidth_1m_raw_two_buffers)
    ->Name("BM_1MiB_messages/raw_shm_two_buffers_floor")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_bandwidth_1m_memcpy)
    ->Name("BM_1MiB_messages/memcpy_one_thread")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_mpmc_ptk)
    ->Name("BM_mpmc_2x2_procs_64B/ptk_queue")
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
#if PTK_BENCH_HAVE_BOOST
BENCHMARK(BM_mpmc_boost_interprocess)
    ->Name("BM_mpmc_2x2_procs_64B/boost_message_queue")
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
#endif
BENCHMARK(BM_mpmc_interleaved)
    ->Name("BM_mpmc_2x2_procs_64B_interleaved/ptk_queue")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_mpmc_threads_interleaved)
    ->Name("BM_mpmc_2x2_threads_64B_interleaved/ptk_queue")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_pipe_roundtrip_ptk)
    ->Name("BM_pipe_roundtrip/ptk_pipe")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_pipe_roundtrip_raw_pipe)
    ->Name("BM_pipe_roundtrip/raw_pipe")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_pipe_roundtrip_raw_socketpair)
    ->Name("BM_pipe_roundtrip/raw_socketpair")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_roundtrip_spin_fresh_pairs<ptk::ring_layout::packed>)
    ->Name("BM_xproc_roundtrip_fresh_pairs/ptk_shm_ring")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_roundtrip_spin_fresh_pairs<ptk::ring_layout::stamped>)
    ->Name("BM_xproc_roundtrip_fresh_pairs_stamped/ptk_shm_ring_stamped")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_roundtrip_sleeping_fresh_pairs)
    ->Name("BM_xproc_roundtrip_sleeping_fresh_pairs/ptk_shm_ring_no_spin")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_pipe_roundtrip_fresh_pairs)
    ->Name("BM_pipe_roundtrip_fresh_pairs/ptk_pipe")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

PTK_BENCHMARK_MAIN()
