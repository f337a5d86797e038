// ptk-server's application: the REST endpoints of the original FastAPI service, each
// built on ptk (processes, the process pool, threads, the thread pool, coroutines,
// an in-process ptk::queue for events).
#pragma once

#include "config.hpp"
#include "events.hpp"
#include "http.hpp"
#include "metrics.hpp"
#include "notify.hpp"
#include "store.hpp"

#include <ptk/process.hpp>
#include <ptk/process_pool.hpp>
#include <ptk/thread.hpp>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace server {

using strand_type = asio::strand<asio::io_context::executor_type>;

/// A process spawned through POST /api/cpp/process/create.
struct tracked_process {
  tracked_process(asio::io_context& io, ptk::process p)
      : strand(asio::make_strand(io)), proc(std::move(p)) {}
  strand_type strand;
  ptk::process proc;  ///< reaped by its supervisor coroutine only
  pid_t pid = 0;
  std::vector<std::string> argv;
  std::string cwd;
  double started = 0;  ///< Unix seconds
  double timeout = 0;  ///< seconds

  std::mutex mutex;  // guards what follows
  std::optional<ptk::exit_status> status;
  double ended = 0;
  std::string ended_by;       ///< "exit", "timeout", "request", "shutdown"
  std::string output;         ///< the last max_output bytes of stdout+stderr
  std::uint64_t dropped = 0;  ///< output bytes dropped from the front
  bool output_eof = false;
  notifier changed;  ///< output appended, exited, output closed
  static constexpr std::size_t max_output = 1024 * 1024;
};

/// A thread created through POST /api/cpp/thread/create.
struct tracked_thread {
  pid_t tid = 0;
  std::string name;
  std::string task;
  nlohmann::json params;
  double created = 0;
  std::mutex mutex;
  nlohmann::json result;  ///< set when it finishes
  double ended = 0;
  ptk::thread thread;  ///< last: destroyed (stopped and joined) first
};

class app {
 public:
  app(config cfg, asio::io_context& io);
  ~app();
  app(const app&) = delete;
  app& operator=(const app&) = delete;

  /// The routes, with metrics series created for each.
  router routes();
  /// Starts the event fan-out.
  void start(http_server& http);
  /// Stops accepting work, terminates and reaps every child (SIGTERM, then SIGKILL
  /// after the grace period), stops threads and pools. Run on a strand.
  asio::awaitable<void> shutdown();
  metrics& stats() noexcept { return metrics_; }

 private:
  struct route_doc {
    std::string method;
    std::string path;
    std::string tag;
    std::string summary;
    nlohmann::json request_example;  ///< null: no body
    std::vector<int> statuses;
  };
  void add(router& r, route_doc doc, handler h, bool mutating);
  nlohmann::json openapi() const;

  // process
  asio::awaitable<response> process_create(request& req);
  asio::awaitable<response> process_list(request& req);
  asio::awaitable<response> process_status(request& req);
  asio::awaitable<response> process_delete(request& req);
  asio::awaitable<response> process_output(request& req);
  asio::awaitable<response> process_pool_submit(request& req);
  // thread
  asio::awaitable<response> thread_create(request& req);
  asio::awaitable<response> thread_list(request& req);
  asio::awaitable<response> thread_state(request& req);
  asio::awaitable<response> async_demo(request& req);
  asio::awaitable<response> thread_pool_submit(request& req);
  // jobs and comparison
  asio::awaitable<response> job_get(request& req);
  asio::awaitable<response> job_list(request& req);
  asio::awaitable<response> comparison_metrics(request& req);
  asio::awaitable<response> benchmark_run(request& req);
  asio::awaitable<response> comparison_results(request& req);
  // service
  asio::awaitable<response> health(request& req);
  asio::awaitable<response> metrics_text(request& req);
  asio::awaitable<response> docs_page(request& req);
  asio::awaitable<response> docs_file(request& req);

  std::shared_ptr<tracked_process> find_process(const request& req);
  std::shared_ptr<tracked_thread> find_thread(const request& req);
  nlohmann::json describe(tracked_process& p, bool detail);
  nlohmann::json describe(tracked_thread& t, bool detail);
  asio::awaitable<void> supervise(std::shared_ptr<tracked_process> p,
                                  asio::posix::stream_descriptor out);
  asio::awaitable<void> read_output(std::shared_ptr<tracked_process> p,
                                    std::shared_ptr<asio::posix::stream_descriptor> out);
  asio::awaitable<void> end_process(std::shared_ptr<tracked_process> p, std::string why,
                                    std::chrono::duration<double> grace);
  static bool signal_group(tracked_process& p, int sig);
  std::size_t running_processes();
  std::size_t running_threads();

  // Background jobs: kept in memory while active, stored in SQLite at each change.
  nlohmann::json new_job(std::string kind, nlohmann::json request);
  void finish_job(nlohmann::json job, nlohmann::json result, nlohmann::json error);
  void check_job_capacity();
  nlohmann::json run_benchmark(const nlohmann::json& params);

  config cfg_;
  asio::io_context& io_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::atomic<bool> stopping_{false};
  metrics metrics_;
  store store_;
  event_hub hub_;
  http_server* http_ = nullptr;
  std::vector<route_doc> docs_;
  std::map<std::string, std::string> swagger_files_;  // name -> content

  std::mutex mutex_;  // guards the tables below
  std::map<pid_t, std::shared_ptr<tracked_process>> processes_;
  std::map<pid_t, std::shared_ptr<tracked_thread>> threads_;
  std::map<std::string, nlohmann::json> active_jobs_;
  std::uint64_t processes_total_ = 0;
  std::uint64_t threads_total_ = 0;

  ptk::process_pool process_pool_;
  ptk::thread_pool pool_;     ///< THREAD_POOL_SIZE workers: CPU work of handlers and jobs
  ptk::thread_pool waiters_;  ///< blocking waits (process pool futures, benchmark runs)
};

}  // namespace server
