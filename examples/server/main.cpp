// ptk-server: the original FastAPI service's REST API, on standalone asio and ptk.
//
//   ptk-server [--host 127.0.0.1] [--port 8000] [--workers 2] ...   (--help lists all)
//
// I/O threads run asio coroutines (the HTTP layer and the handlers that only wait);
// CPU work goes to a ptk::thread_pool, registered functions to a ptk::process_pool,
// spawned commands are ptk::processes watched through their pidfds. SIGINT or SIGTERM
// stops accepting, terminates and reaps every child, stops the threads and pools and
// closes the database before exiting.
#include "app.hpp"
#include "config.hpp"
#include "http.hpp"
#include "io_threads.hpp"

#include <ptk/process_pool.hpp>
#include <ptk/version.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/signal_set.hpp>

#include <prometheus/exposer.h>

#include <csignal>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

int main(int argc, char** argv) {
  ptk::process_pool::serve_if_worker();  // a process-pool worker serves tasks from here
  const server::config cfg = server::load_config(argc, argv);
  std::signal(SIGPIPE, SIG_IGN);

  if (!server::is_loopback(cfg.host) && cfg.api_token.empty()) {
    std::fprintf(stderr,
                 "ptk-server: refusing to listen on %s without API_TOKEN: spawning commands is "
                 "remote code execution; set API_TOKEN (or --api-token) or bind to 127.0.0.1\n",
                 cfg.host.c_str());
    return 2;
  }

  server::io_threads threads(cfg.workers, cfg.io_model == "shared");
  asio::io_context& io = threads.main();  // also runs the app's own work
  std::optional<server::app> app;
  try {
    app.emplace(cfg, io);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ptk-server: %s\n", e.what());
    return 1;
  }

  std::mutex log_mutex;
  server::http_limits limits;
  limits.max_body_bytes = cfg.max_body_bytes;
  limits.max_header_bytes = cfg.max_header_bytes;
  limits.max_connections = cfg.max_connections;
  limits.request_timeout = std::chrono::milliseconds(static_cast<long>(cfg.request_timeout * 1000));
  limits.idle_timeout = std::chrono::milliseconds(static_cast<long>(cfg.idle_timeout * 1000));
  server::metrics& m = app->stats();
  server::http_server http(
      io, app->routes(), limits,
      [&m, &log_mutex, quiet = cfg.quiet](std::string_view method, std::string_view route,
                                          std::size_t index, int status, double seconds) {
        m.observe(index, status, seconds);
        if (quiet) return;
        const std::lock_guard lock(log_mutex);
        std::printf("%.*s %.*s %d %.3f ms\n", static_cast<int>(method.size()), method.data(),
                    static_cast<int>(route.size()), route.data(), status, seconds * 1000);
      },
      threads.for_connections());

  unsigned short port = 0;
  try {
    port = http.listen(cfg.host, cfg.port);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ptk-server: cannot listen on %s:%u: %s\n", cfg.host.c_str(),
                 static_cast<unsigned>(cfg.port), e.what());
    return 1;
  }
  app->start(http);
  http.start();

  std::unique_ptr<prometheus::Exposer> exposer;
  std::shared_ptr<prometheus::Collectable> collectable;
  if (cfg.enable_metrics && cfg.metrics_port != 0) {
    try {
      exposer =
          std::make_unique<prometheus::Exposer>(cfg.host + ":" + std::to_string(cfg.metrics_port));
      collectable = m.collectable();
      exposer->RegisterCollectable(collectable);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ptk-server: cannot serve metrics on port %u: %s\n",
                   static_cast<unsigned>(cfg.metrics_port), e.what());
      return 1;
    }
  }

  const std::string base = "http://" + cfg.host + ":" + std::to_string(port);
  std::printf(
      "ptk-server %s listening on %s (%u I/O threads, %s, thread pool %u, process pool %u)\n",
      PTK_VERSION_STRING, base.c_str(), cfg.workers,
      threads.shared() ? "shared io_context" : "io_context per thread", cfg.thread_pool_size,
      cfg.process_pool_size);
  std::printf("  curl %s/health\n  curl %s/api/cpp/process/list\n  browser: %s/docs\n",
              base.c_str(), base.c_str(), base.c_str());
  std::fflush(stdout);

  asio::signal_set signals(io, SIGINT, SIGTERM);
  std::function<void(std::error_code, int)> on_signal;
  bool stopping = false;
  on_signal = [&](std::error_code ec, int sig) {
    if (ec) return;
    signals.async_wait(on_signal);  // a second signal while stopping is absorbed
    if (std::exchange(stopping, true)) {
      std::printf("ptk-server: signal %d: already stopping\n", sig);
      std::fflush(stdout);
      return;
    }
    std::printf("ptk-server: signal %d: stopping\n", sig);
    std::fflush(stdout);
    asio::co_spawn(
        asio::make_strand(io),
        [&]() -> asio::awaitable<void> {
          http.stop();
          co_await app->shutdown();
          threads.stop();
        },
        asio::detached);
  };
  signals.async_wait(on_signal);

  threads.run();
  // From here on a late SIGINT or SIGTERM must not cut the cleanup short.
  std::signal(SIGINT, SIG_IGN);
  std::signal(SIGTERM, SIG_IGN);
  signals.cancel();
  exposer.reset();
  app.reset();  // joins threads and pools, closes the database
  std::printf("ptk-server: stopped\n");
  return 0;
}
