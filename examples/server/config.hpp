// ptk-server's configuration: the original service's environment variables, each
// overridable by a command-line flag (CLI11), with the same names and meanings.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace server {

struct config {
  std::string host = "127.0.0.1";  ///< HOST
  unsigned short port = 8000;      ///< PORT (0: an ephemeral port, printed at start)
  unsigned workers = 2;            ///< WORKERS: I/O threads
  /// IO_MODEL: "per-thread" (one io_context per I/O thread; a connection stays on
  /// one thread) or "shared" (one io_context on all I/O threads).
  std::string io_model = "per-thread";
  std::size_t max_processes = 16;   ///< MAX_PROCESSES: running spawned processes at once
  double process_timeout = 300;     ///< PROCESS_TIMEOUT: seconds before a spawned process is killed
  unsigned process_pool_size = 2;   ///< PROCESS_POOL_SIZE: worker processes of the process pool
  std::size_t max_threads = 32;     ///< MAX_THREADS: running ptk::threads created through the API
  unsigned thread_pool_size = 4;    ///< THREAD_POOL_SIZE: workers of the thread pool
  bool enable_metrics = true;       ///< ENABLE_METRICS: serve GET /metrics
  unsigned short metrics_port = 0;  ///< METRICS_PORT: also expose metrics on this port (0: off)
  std::vector<std::string> allowed_commands{
      "echo", "sleep", "true", "false",
      "date", "seq",   "uname"};             ///< ALLOWED_COMMANDS (comma-separated)
  std::string api_token;                     ///< API_TOKEN: bearer token for mutating endpoints
  std::string database = "./ptk-server.db";  ///< DATABASE: SQLite file for results and jobs
  std::string swagger_ui_dir;  ///< SWAGGER_UI_DIR: the swagger-ui-dist package on disk
  std::size_t max_body_bytes = 1024 * 1024;  ///< MAX_BODY_BYTES
  std::size_t max_header_bytes = 8 * 1024;   ///< MAX_HEADER_BYTES
  std::size_t max_connections = 1024;        ///< MAX_CONNECTIONS
  std::size_t max_jobs = 256;   ///< MAX_JOBS: background jobs queued or running at once
  double request_timeout = 10;  ///< REQUEST_TIMEOUT: seconds to receive one request
  double idle_timeout = 30;     ///< IDLE_TIMEOUT: seconds a keep-alive connection may idle
  double shutdown_grace = 2;    ///< SHUTDOWN_GRACE: seconds between SIGTERM and SIGKILL
  bool quiet = false;           ///< QUIET: no per-request log lines
};

/// Reads the environment, then the flags (which win). Exits on --help or a bad value,
/// as CLI11 does. @return the configuration.
config load_config(int argc, char** argv);

/// @return true if `host` is a loopback address (127.0.0.0/8, ::1, localhost).
bool is_loopback(const std::string& host);

}  // namespace server
