#include "config.hpp"

#include <CLI/CLI.hpp>

#include <asio/ip/address.hpp>

#include <cctype>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string_view>

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
  // Each setting: the environment variable NAME and the flag --name.
  const auto option = [&app](auto& variable, std::string_view env, const char* help) {
    std::string flag = "--";
    for (const char ch : env) {
      flag += ch == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
    return app.add_option(flag, variable, help)->envname(std::string(env));
  };
  option(c.host, "HOST", "address to listen on");
  option(c.port, "PORT", "port to listen on (0: ephemeral, printed)");
  option(c.workers, "WORKERS", "I/O threads")->check(positive);
  option(c.io_model, "IO_MODEL",
         "per-thread: one io_context per I/O thread, a connection stays on one thread (more "
         "requests/s); shared: one io_context on all of them, any thread serves any "
         "connection (shorter tails when the CPUs are contended)")
      ->check(CLI::IsMember({"per-thread", "shared"}));
  option(c.max_processes, "MAX_PROCESSES", "spawned processes running at once")->check(positive);
  option(c.process_timeout, "PROCESS_TIMEOUT", "seconds before a spawned process is terminated")
      ->check(positive);
  option(c.process_pool_size, "PROCESS_POOL_SIZE", "worker processes of the pool")->check(positive);
  option(c.max_threads, "MAX_THREADS", "API-created threads running at once")->check(positive);
  option(c.thread_pool_size, "THREAD_POOL_SIZE", "workers of the thread pool")->check(positive);
  option(c.enable_metrics, "ENABLE_METRICS", "serve GET /metrics (true/false)");
  option(c.metrics_port, "METRICS_PORT", "also serve Prometheus metrics on this port (0: off)");
  option(allowed, "ALLOWED_COMMANDS", "comma-separated programs POST process/create may run");
  option(c.api_token, "API_TOKEN",
         "bearer token required by mutating endpoints (required off loopback)");
  option(c.database, "DATABASE", "SQLite file for benchmark results and jobs");
  option(c.swagger_ui_dir, "SWAGGER_UI_DIR", "the swagger-ui-dist package directory");
  option(c.max_body_bytes, "MAX_BODY_BYTES", "largest request body (413 above)")->check(positive);
  option(c.max_header_bytes, "MAX_HEADER_BYTES", "largest request head (431 above)")
      ->check(positive);
  option(c.max_connections, "MAX_CONNECTIONS", "open connections (503 above)")->check(positive);
  option(c.max_jobs, "MAX_JOBS", "background jobs queued or running (503 above)")->check(positive);
  option(c.request_timeout, "REQUEST_TIMEOUT", "seconds to receive a whole request")
      ->check(positive);
  option(c.idle_timeout, "IDLE_TIMEOUT", "seconds a keep-alive connection may idle")
      ->check(positive);
  option(c.shutdown_grace, "SHUTDOWN_GRACE",
         "seconds between SIGTERM and SIGKILL for children at shutdown")
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
