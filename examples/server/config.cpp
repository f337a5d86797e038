#include "config.hpp"

#include <CLI/CLI.hpp>

#include <asio/ip/address.hpp>

#include <cstdlib>
#include <iostream>
#include <sstream>

#ifndef PTK_SERVER_SWAGGER_UI_DIR
#define PTK_SERVER_SWAGGER_UI_DIR "/usr/local/share/ptk/node_modules/swagger-ui-dist"
#endif

namespace server {

namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    const auto b = item.find_first_not_of(" \t");
    const auto e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

}  // namespace

bool is_loopback(const std::string& host) {
  if (host == "localhost") return true;
  std::error_code ec;
  const auto a = asio::ip::make_address(host, ec);
  return !ec && a.is_loopback();
}

config load_config(int argc, char** argv) {
  config c;
  c.swagger_ui_dir = PTK_SERVER_SWAGGER_UI_DIR;
  CLI::App app{
      "ptk-server: the process & thread REST API on ptk and asio.\n"
      "Every option may also be set by the environment variable named in brackets;\n"
      "a flag overrides the environment."};
  app.option_defaults()->always_capture_default();
  std::string allowed;
  for (const auto& a : c.allowed_commands) allowed += (allowed.empty() ? "" : ",") + a;
  const auto positive = CLI::PositiveNumber;
  app.add_option("--host", c.host, "address to listen on")->envname("HOST");
  app.add_option("--port", c.port, "port to listen on (0: ephemeral, printed)")->envname("PORT");
  app.add_option("--workers", c.workers, "I/O threads")->envname("WORKERS")->check(positive);
  app.add_option("--max-processes", c.max_processes, "spawned processes running at once")
      ->envname("MAX_PROCESSES")
      ->check(positive);
  app.add_option("--process-timeout", c.process_timeout,
                 "seconds before a spawned process is terminated")
      ->envname("PROCESS_TIMEOUT")
      ->check(positive);
  app.add_option("--process-pool-size", c.process_pool_size, "worker processes of the pool")
      ->envname("PROCESS_POOL_SIZE")
      ->check(positive);
  app.add_option("--max-threads", c.max_threads, "API-created threads running at once")
      ->envname("MAX_THREADS")
      ->check(positive);
  app.add_option("--thread-pool-size", c.thread_pool_size, "workers of the thread pool")
      ->envname("THREAD_POOL_SIZE")
      ->check(positive);
  app.add_option("--enable-metrics", c.enable_metrics, "serve GET /metrics (true/false)")
      ->envname("ENABLE_METRICS");
  app.add_option("--metrics-port", c.metrics_port,
                 "also serve Prometheus metrics on this port (0: off)")
      ->envname("METRICS_PORT");
  app.add_option("--allowed-commands", allowed,
                 "comma-separated programs POST process/create may run")
      ->envname("ALLOWED_COMMANDS");
  app.add_option("--api-token", c.api_token,
                 "bearer token required by mutating endpoints (required off loopback)")
      ->envname("API_TOKEN");
  app.add_option("--database", c.database, "SQLite file for benchmark results and jobs")
      ->envname("DATABASE");
  app.add_option("--swagger-ui-dir", c.swagger_ui_dir, "the swagger-ui-dist package directory")
      ->envname("SWAGGER_UI_DIR");
  app.add_option("--max-body-bytes", c.max_body_bytes, "largest request body (413 above)")
      ->envname("MAX_BODY_BYTES")
      ->check(positive);
  app.add_option("--max-header-bytes", c.max_header_bytes, "largest request head (431 above)")
      ->envname("MAX_HEADER_BYTES")
      ->check(positive);
  app.add_option("--max-connections", c.max_connections, "open connections (503 above)")
      ->envname("MAX_CONNECTIONS")
      ->check(positive);
  app.add_option("--max-jobs", c.max_jobs, "background jobs queued or running (503 above)")
      ->envname("MAX_JOBS")
      ->check(positive);
  app.add_option("--request-timeout", c.request_timeout, "seconds to receive a whole request")
      ->envname("REQUEST_TIMEOUT")
      ->check(positive);
  app.add_option("--idle-timeout", c.idle_timeout, "seconds a keep-alive connection may idle")
      ->envname("IDLE_TIMEOUT")
      ->check(positive);
  app.add_option("--shutdown-grace", c.shutdown_grace,
                 "seconds between SIGTERM and SIGKILL for children at shutdown")
      ->envname("SHUTDOWN_GRACE")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--quiet", c.quiet, "no per-request log lines")->envname("QUIET");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  c.allowed_commands = split_list(allowed);
  return c;
}

}  // namespace server
