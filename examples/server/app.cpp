#include "app.hpp"

#include "tasks.hpp"

#include <ptk/coro.hpp>
#include <ptk/coro_asio.hpp>
#include <ptk/process_asio.hpp>
#include <ptk/version.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

namespace server {

namespace {

using json = nlohmann::json;
using steady = std::chrono::steady_clock;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

double ms_since(steady::time_point t0) {
  return std::chrono::duration<double, std::milli>(steady::now() - t0).count();
}

// ---- request bodies -------------------------------------------------------------

// Parses a JSON object body and refuses fields outside `allowed`.
json parse_body(const request& req, std::initializer_list<std::string_view> allowed) {
  if (req.body.empty()) return json::object();
  const std::string_view type = req.header("content-type");
  if (!type.empty() && type.find("json") == std::string_view::npos) {
    throw http_error{415, "request body must be JSON", json{{"content_type", type}}};
  }
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded()) {
    // Parse again for the position and reason of the error.
    try {
      const json again = json::parse(req.body);
      (void)again;
    } catch (const json::parse_error& e) {
      throw http_error{400, "malformed JSON", json{{"reason", e.what()}, {"byte", e.byte}}};
    }
    throw http_error{400, "malformed JSON"};
  }
  if (!body.is_object()) throw http_error{400, "request body must be a JSON object"};
  json unknown = json::array();
  for (const auto& [key, value] : body.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) unknown.push_back(key);
  }
  if (!unknown.empty()) {
    json known = json::array();
    for (auto a : allowed) known.push_back(a);
    throw http_error{400, "unknown fields", json{{"unknown", unknown}, {"allowed", known}}};
  }
  return body;
}

[[noreturn]] void bad_field(std::string_view field, std::string_view want) {
  throw http_error{400, "invalid field '" + std::string(field) + "'",
                   json{{"field", field}, {"expected", want}}};
}

long long int_field(const json& body, std::string_view field, long long fallback, long long lo,
                    long long hi) {
  const auto it = body.find(field);
  if (it == body.end()) return fallback;
  if (!it->is_number_integer()) {
    bad_field(field, "an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
  }
  const long long v = it->get<long long>();
  if (v < lo || v > hi) {
    bad_field(field, "an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
  }
  return v;
}

double number_field(const json& body, std::string_view field, double fallback, double lo,
                    double hi) {
  const auto it = body.find(field);
  if (it == body.end()) return fallback;
  if (!it->is_number() || it->get<double>() < lo || it->get<double>() > hi) {
    std::ostringstream want;
    want << "a number from " << lo << " to " << hi;
    bad_field(field, want.str());
  }
  return it->get<double>();
}

std::string choice_field(const json& body, std::string_view field, std::string fallback,
                         std::initializer_list<std::string_view> choices) {
  const auto it = body.find(field);
  std::string want = "one of";
  for (auto c : choices) want.append(" ").append(c);
  if (it == body.end()) return fallback;
  if (!it->is_string()) bad_field(field, want);
  const auto v = it->get<std::string>();
  if (std::find(choices.begin(), choices.end(), v) == choices.end()) bad_field(field, want);
  return v;
}

long long query_int(const request& req, std::string_view name, long long fallback, long long lo,
                    long long hi) {
  const auto v = req.query_param(name);
  if (!v) return fallback;
  long long out = 0;
  const auto* end = v->data() + v->size();
  const auto r = std::from_chars(v->data(), end, out);
  if (r.ec != std::errc{} || r.ptr != end || out < lo || out > hi) {
    throw http_error{
        400, "invalid query parameter '" + std::string(name) + "'",
        json{{"parameter", name},
             {"expected", "an integer from " + std::to_string(lo) + " to " + std::to_string(hi)}}};
  }
  return out;
}

pid_t id_param(const request& req, const char* name) {
  const std::string& s = req.params.at(name);
  long long v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc{} || r.ptr != s.data() + s.size() || v <= 0 || v > 0x3fffffff) {
    throw http_error{400, std::string(name) + " must be a positive integer", json{{name, s}}};
  }
  return static_cast<pid_t>(v);
}

// The entry of `table` named by the path parameter `param`, or 404.
template <class Table>
typename Table::mapped_type find_tracked(Table& table, const request& req, const char* param,
                                         const char* what) {
  const pid_t id = id_param(req, param);
  const auto it = table.find(id);
  if (it == table.end()) {
    throw http_error{404, std::string("no such ") + what,
                     json{{param, id}, {"hint", std::string("GET /api/cpp/") + what + "/list"}}};
  }
  return it->second;
}

json exit_json(const ptk::exit_status& s) {
  const auto& u = s.usage();
  return {{"exited", s.exited()},
          {"code", s.exited() ? json(s.code()) : json(nullptr)},
          {"signal", s.signaled() ? json(s.signal()) : json(nullptr)},
          {"signal_name",
           s.signaled() ? json(sigabbrev_np(s.signal()) != nullptr ? sigabbrev_np(s.signal()) : "?")
                        : json(nullptr)},
          {"core_dumped", s.core_dumped()},
          {"description", s.to_string()},
          {"rusage",
           {{"user_seconds", seconds(u.user_time)},
            {"system_seconds", seconds(u.system_time)},
            {"max_rss_bytes", u.max_rss_bytes},
            {"minor_faults", u.minor_faults},
            {"major_faults", u.major_faults},
            {"voluntary_context_switches", u.voluntary_context_switches},
            {"involuntary_context_switches", u.involuntary_context_switches}}}};
}

std::string new_id() {
  static std::mutex m;
  static std::mt19937_64 gen{std::random_device{}()};
  const std::lock_guard lock(m);
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(gen()));
  return buf;
}

// ---- running work on ptk pools from asio coroutines ------------------------------

// Runs f on a ptk::thread_pool worker: the coroutine hops onto the pool, and
// ptk::async_run brings the result back to the awaiting asio coroutine's executor.
template <class F>
ptk::task<json> on_pool(ptk::thread_pool& pool, ptk::priority p, F f) {
  co_await pool.schedule(p);
  co_return f();
}

ptk::task<json> sleep_together(strand_type ex, long long n, std::chrono::milliseconds each) {
  const auto t0 = steady::now();
  std::vector<ptk::task<double>> sleepers;
  sleepers.reserve(static_cast<std::size_t>(n));
  for (long long i = 0; i < n; ++i) {
    sleepers.push_back([](strand_type e, std::chrono::milliseconds d) -> ptk::task<double> {
      const auto s0 = steady::now();
      co_await ptk::sleep_for(e, d);
      co_return ms_since(s0);
    }(ex, each));
  }
  const std::vector<double> each_ms = co_await ptk::when_all(std::move(sleepers));
  const double total = ms_since(t0);
  double sum = 0;
  for (double d : each_ms) sum += d;
  co_return json{{"coroutines", n},
                 {"sleep_ms", each.count()},
                 {"total_ms", total},
                 {"sum_ms", sum},
                 {"overlap", total > 0 ? sum / total : 0.0},
                 {"explanation",
                  "each coroutine slept on an asio timer of the I/O strand; they overlap, so "
                  "the total is close to one sleep while the sum grows with the count"}};
}

json task_result(const std::string& task, long long n, long long ms, std::stop_token stop = {}) {
  const auto t0 = steady::now();
  json value;
  if (task == "fib") {
    value = tasks::fib(static_cast<int>(n));
  } else if (task == "primes") {
    value = tasks::prime_count(n);
  } else {
    value = tasks::sleep_ms(ms, stop);
  }
  return {{"task", task},
          {"value", value},
          {"elapsed_ms", ms_since(t0)},
          {"thread", ptk::this_thread_id()}};
}

json pool_error(const std::exception& e) {
  std::string type = "error";
  if (dynamic_cast<const ptk::worker_crash_error*>(&e) != nullptr)
    type = "worker_crash";
  else if (dynamic_cast<const ptk::task_timeout_error*>(&e) != nullptr)
    type = "timeout";
  else if (dynamic_cast<const ptk::task_cancelled_error*>(&e) != nullptr)
    type = "cancelled";
  else if (dynamic_cast<const ptk::remote_error*>(&e) != nullptr)
    type = "exception";
  return {{"type", type}, {"message", e.what()}};
}

// The JSON schema of each POST body, for /openapi.json. Unknown fields are refused.
json request_schema(const std::string& path) {
  const auto integer = [](long long lo, long long hi, const char* what) {
    return json{{"type", "integer"}, {"minimum", lo}, {"maximum", hi}, {"description", what}};
  };
  const auto choice = [](std::initializer_list<const char*> values, const char* what) {
    json e = json::array();
    for (const char* v : values) e.push_back(v);
    return json{
        {"type", "string"}, {"enum", e}, {"default", *values.begin()}, {"description", what}};
  };
  json props;
  json required = json::array();
  if (path == "/api/cpp/process/create") {
    props = {{"argv",
              {{"type", "array"},
               {"items", {{"type", "string"}}},
               {"minItems", 1},
               {"description", "the program (in ALLOWED_COMMANDS) and its arguments"}}},
             {"cwd", {{"type", "string"}, {"description", "working directory"}}},
             {"env",
              {{"type", "object"},
               {"additionalProperties", {{"type", "string"}}},
               {"description", "variables added to the server's environment"}}},
             {"timeout",
              {{"type", "number"},
               {"description", "seconds before it is terminated (at most PROCESS_TIMEOUT)"}}}};
    required.push_back("argv");
  } else if (path == "/api/cpp/process/pool/submit") {
    props = {{"function", choice({"fib", "prime_count", "sleep", "crash"}, "registered function")},
             {"n", integer(0, 50'000'000, "fib: 0 to 40; prime_count: primes below n")},
             {"ms", integer(0, 60000, "sleep: milliseconds")},
             {"mode", choice({"sync", "background"}, "wait, or answer 202 with a job")}};
  } else if (path == "/api/cpp/thread/create") {
    props = {{"name", {{"type", "string"}, {"maxLength", 64}, {"description", "thread name"}}},
             {"task", choice({"sleep", "cpu", "fib", "fail"}, "what the thread runs")},
             {"ms", integer(0, 600000, "sleep and cpu: milliseconds")},
             {"n", integer(0, 40, "fib: n")}};
  } else if (path == "/api/cpp/thread/pool/submit") {
    props = {{"task", choice({"fib", "primes", "sleep"}, "what to run")},
             {"n", integer(0, 50'000'000, "fib: 0 to 40; primes: primes below n")},
             {"ms", integer(0, 60000, "sleep: milliseconds")},
             {"mode", choice({"sync", "background"}, "wait, or answer 202 with a job")},
             {"priority", choice({"normal", "high"}, "thread pool priority")}};
  } else if (path == "/api/cpp/comparison/benchmark/run") {
    props = {{"scenario", choice({"cpu", "io"}, "CPU-bound (fib) or I/O-bound (sleep)")},
             {"tasks", integer(1, 256, "how many tasks")},
             {"n", integer(1, 5000, "cpu: fib(n), at most 35; io: milliseconds of sleep")},
             {"workers", integer(1, 64, "threads of the thread run")}};
  }
  json schema = {{"type", "object"}, {"properties", props}, {"additionalProperties", false}};
  if (!required.empty()) schema["required"] = required;
  return schema;
}

}  // namespace

// ---- construction, routes, OpenAPI -----------------------------------------------

app::app(config cfg, asio::io_context& io)
    : cfg_(std::move(cfg)),
      io_(io),
      store_(cfg_.database),
      hub_(io),
      process_pool_(ptk::process_pool_options{.workers = cfg_.process_pool_size,
                                              .task_timeout = std::chrono::seconds(60)}),
      pool_(ptk::thread_pool_options{.workers = cfg_.thread_pool_size, .name = "ptk-pool"}),
      waiters_(ptk::thread_pool_options{.workers = std::max(4U, 2 * cfg_.process_pool_size),
                                        .name = "ptk-wait"}) {
  // Swagger UI, served from the swagger-ui-dist package on disk.
  namespace fs = std::filesystem;
  for (const char* name :
       {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
        "favicon-32x32.png", "favicon-16x16.png"}) {
    std::ifstream in(fs::path(cfg_.swagger_ui_dir) / name, std::ios::binary);
    if (!in) continue;
    std::ostringstream content;
    content << in.rdbuf();
    swagger_files_[name] = content.str();
  }
  metrics_.refresh = [this](metrics& m) {
    const auto s = pool_.stats();
    m.pool_workers->Set(static_cast<double>(s.workers));
    m.pool_queued->Set(static_cast<double>(s.queued));
    m.pool_running->Set(static_cast<double>(s.running));
    m.pool_executed->Set(static_cast<double>(s.executed));
    m.pool_stolen->Set(static_cast<double>(s.stolen));
    const auto p = process_pool_.stats();
    m.ppool_workers->Set(static_cast<double>(p.workers_alive));
    m.ppool_queued->Set(static_cast<double>(p.tasks_queued));
    m.ppool_running->Set(static_cast<double>(p.tasks_running));
    m.ppool_done->Set(static_cast<double>(p.tasks_done));
    m.ppool_failed->Set(static_cast<double>(p.tasks_failed));
    m.ppool_crashes->Set(static_cast<double>(p.crashes));
    m.active_processes->Set(static_cast<double>(running_processes()));
    m.active_threads->Set(static_cast<double>(running_threads()));
    m.websocket_subscribers->Set(static_cast<double>(hub_.stats().value("subscribers", 0)));
    if (http_ != nullptr) m.open_connections->Set(static_cast<double>(http_->connections()));
    {
      const std::lock_guard lock(mutex_);
      m.jobs_active->Set(static_cast<double>(active_jobs_.size()));
    }
  };
}

app::~app() {
  // Threads first: each is asked to stop and joined by its destructor.
  std::map<pid_t, std::shared_ptr<tracked_thread>> threads;
  {
    const std::lock_guard lock(mutex_);
    threads.swap(threads_);
  }
  for (auto& [tid, t] : threads) t->thread.request_stop();
  threads.clear();
}

void app::start(http_server& http) {
  http_ = &http;
  hub_.start();
}

void app::add(router& r, route_doc doc, handler h, bool mutating) {
  metrics_.add_route(doc.method, doc.path);
  if (mutating) {
    h = [this, inner = std::move(h)](request& req) -> asio::awaitable<response> {
      if (!cfg_.api_token.empty() && req.header("authorization") != "Bearer " + cfg_.api_token) {
        response denied = error_response(401, "missing or wrong bearer token",
                                         json{{"header", "Authorization: Bearer <API_TOKEN>"}});
        denied.headers.emplace_back("WWW-Authenticate", "Bearer");
        co_return denied;
      }
      if (stopping_) co_return error_response(503, "shutting down");
      co_return co_await inner(req);
    };
  }
  r.add(doc.method, doc.path, std::move(h));
  docs_.push_back(std::move(doc));
}

router app::routes() {
  router r;
  const auto bind = [this](asio::awaitable<response> (app::*f)(request&)) -> handler {
    return [this, f](request& req) { return (this->*f)(req); };
  };
  add(r,
      {"POST",
       "/api/cpp/process/create",
       "process",
       "Spawn an allowed command",
       json{{"argv", {"sleep", "1"}},
            {"cwd", "/tmp"},
            {"env", {{"GREETING", "hi"}}},
            {"timeout", 30}},
       {201, 400, 401, 429}},
      bind(&app::process_create), true);
  add(r, {"GET", "/api/cpp/process/list", "process", "Every tracked process", nullptr, {200}},
      bind(&app::process_list), false);
  add(r,
      {"GET",
       "/api/cpp/process/{pid}/status",
       "process",
       "One process: ptk::process_info, exit status and rusage",
       nullptr,
       {200, 400, 404}},
      bind(&app::process_status), false);
  add(r,
      {"DELETE",
       "/api/cpp/process/{pid}",
       "process",
       "Terminate (SIGTERM, grace period, then SIGKILL) and return the exit status",
       nullptr,
       {200, 400, 401, 404}},
      bind(&app::process_delete), true);
  add(r,
      {"GET",
       "/api/cpp/process/{pid}/output",
       "process",
       "Stream the child's stdout and stderr live (chunked)",
       nullptr,
       {200, 400, 404}},
      bind(&app::process_output), false);
  add(r,
      {"POST",
       "/api/cpp/process/pool/submit",
       "process",
       "Run a registered function (fib, prime_count, sleep, crash) on the process pool",
       json{{"function", "fib"}, {"n", 30}, {"mode", "sync"}},
       {200, 202, 400, 401, 503}},
      bind(&app::process_pool_submit), true);
  add(r,
      {"POST",
       "/api/cpp/thread/create",
       "thread",
       "Start a named ptk::thread",
       json{{"name", "worker-1"}, {"task", "sleep"}, {"ms", 2000}},
       {201, 400, 401, 429}},
      bind(&app::thread_create), true);
  add(r,
      {"GET",
       "/api/cpp/thread/list",
       "thread",
       "Every thread created through the API",
       nullptr,
       {200}},
      bind(&app::thread_list), false);
  add(r,
      {"GET",
       "/api/cpp/thread/state/{tid}",
       "thread",
       "A thread's ptk state and the kernel's view (ptk::thread_info)",
       nullptr,
       {200, 400, 404}},
      bind(&app::thread_state), false);
  add(r,
      {"GET",
       "/api/cpp/thread/async-demo",
       "thread",
       "N coroutines sleeping concurrently (?coroutines=10&ms=200): total vs sum",
       nullptr,
       {200, 400}},
      bind(&app::async_demo), false);
  add(r,
      {"POST",
       "/api/cpp/thread/pool/submit",
       "thread",
       "Run a task on the thread pool: sync (wait) or background (202 and a job id)",
       json{{"task", "fib"}, {"n", 30}, {"mode", "sync"}, {"priority", "normal"}},
       {200, 202, 400, 401, 503}},
      bind(&app::thread_pool_submit), true);
  add(r,
      {"GET", "/api/cpp/jobs", "jobs", "Background jobs, newest first (?limit=50)", nullptr, {200}},
      bind(&app::job_list), false);
  add(r, {"GET", "/api/cpp/jobs/{id}", "jobs", "One background job", nullptr, {200, 404}},
      bind(&app::job_get), false);
  add(r,
      {"GET",
       "/api/cpp/comparison/metrics",
       "comparison",
       "Live counts: processes, threads, pools, channels",
       nullptr,
       {200}},
      bind(&app::comparison_metrics), false);
  add(r,
      {"POST",
       "/api/cpp/comparison/benchmark/run",
       "comparison",
       "Run a scenario (cpu or io: threads vs processes vs coroutines) in the background",
       json{{"scenario", "cpu"}, {"tasks", 8}, {"n", 27}, {"workers", 2}},
       {202, 400, 401, 503}},
      bind(&app::benchmark_run), true);
  add(r,
      {"GET",
       "/api/cpp/comparison/results",
       "comparison",
       "Stored benchmark results, newest first (?limit=20)",
       nullptr,
       {200}},
      bind(&app::comparison_results), false);
  add(r, {"GET", "/health", "service", "Liveness and readiness", nullptr, {200, 503}},
      bind(&app::health), false);
  add(r, {"GET", "/metrics", "service", "Prometheus metrics", nullptr, {200, 404}},
      bind(&app::metrics_text), false);
  add(
      r, {"GET", "/openapi.json", "service", "This description", nullptr, {200}},
      [this](request&) -> asio::awaitable<response> { co_return json_response(200, openapi()); },
      false);
  add(r, {"GET", "/docs", "service", "Swagger UI", nullptr, {200, 503}}, bind(&app::docs_page),
      false);
  add(r, {"GET", "/docs/{file}", "service", "Swagger UI's files", nullptr, {200, 404}},
      bind(&app::docs_file), false);
  add(
      r,
      {"GET",
       "/ws/events",
       "service",
       "WebSocket: live events (process started/exited, thread started/finished, job done)",
       nullptr,
       {101, 400, 426}},
      [this](request& req) -> asio::awaitable<response> { co_return websocket_upgrade(req, hub_); },
      false);
  return r;
}

json app::openapi() const {
  json paths = json::object();
  for (const auto& d : docs_) {
    json op = {{"summary", d.summary}, {"tags", {d.tag}}};
    json params = json::array();
    for (std::size_t at = d.path.find('{'); at != std::string::npos;
         at = d.path.find('{', at + 1)) {
      const std::string name = d.path.substr(at + 1, d.path.find('}', at) - at - 1);
      params.push_back(
          {{"name", name},
           {"in", "path"},
           {"required", true},
           {"schema", {{"type", name == "file" || name == "id" ? "string" : "integer"}}}});
    }
    if (!params.empty()) op["parameters"] = params;
    if (!d.request_example.is_null()) {
      op["requestBody"] = {
          {"required", true},
          {"content",
           {{"application/json",
             {{"schema", request_schema(d.path)}, {"example", d.request_example}}}}}};
    }
    json responses = json::object();
    for (int s : d.statuses) {
      responses[std::to_string(s)] = {{"description", std::string(reason(s))}};
    }
    op["responses"] = responses;
    if (d.method == "POST" || d.method == "DELETE") {
      op["security"] = json::array({json{{"bearer", json::array()}}});
    }
    std::string method = d.method;
    std::transform(method.begin(), method.end(), method.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    paths[d.path][method] = op;
  }
  return {
      {"openapi", "3.0.3"},
      {"info",
       {{"title", "ptk-server"},
        {"version", PTK_VERSION_STRING},
        {"description",
         "Processes, threads, pools and coroutines over HTTP: the Python FastAPI teaching "
         "service rebuilt on ptk and asio. Mutating endpoints need a bearer token when "
         "API_TOKEN is set."}}},
      {"components", {{"securitySchemes", {{"bearer", {{"type", "http"}, {"scheme", "bearer"}}}}}}},
      {"paths", paths}};
}

// ---- processes ---------------------------------------------------------------------

std::size_t app::running_processes() {
  std::vector<std::shared_ptr<tracked_process>> all;
  {
    const std::lock_guard lock(mutex_);
    for (auto& [pid, p] : processes_) all.push_back(p);
  }
  std::size_t n = 0;
  for (auto& p : all) {
    const std::lock_guard lock(p->mutex);
    if (!p->status) ++n;
  }
  return n;
}

bool app::signal_group(tracked_process& p, int sig) {
  const std::lock_guard lock(p.mutex);
  if (p.status) return false;  // reaped: the id may belong to someone else now
  // Its descendants are found by parentage first (one that left the group with setsid
  // is found while the child lives), then the child's process group is signalled, and
  // only then each descendant: a parent must not see its child die (and exit by
  // itself) before the signal meant for it arrives.
  const std::vector<pid_t> tree = ptk::detail::descendants(p.pid);
  const bool sent = ::kill(-p.pid, sig) == 0 || ::kill(p.pid, sig) == 0;
  for (const pid_t d : tree) ::kill(d, sig);
  return sent;
}

asio::awaitable<response> app::process_create(request& req) {
  const json body = parse_body(req, {"argv", "cwd", "env", "timeout"});
  const auto argv_it = body.find("argv");
  if (argv_it == body.end() || !argv_it->is_array() || argv_it->empty()) {
    bad_field("argv", "a non-empty array of strings: the program and its arguments");
  }
  std::vector<std::string> argv;
  for (const auto& a : *argv_it) {
    if (!a.is_string()) bad_field("argv", "a non-empty array of strings");
    argv.push_back(a.get<std::string>());
  }
  if (std::find(cfg_.allowed_commands.begin(), cfg_.allowed_commands.end(), argv[0]) ==
      cfg_.allowed_commands.end()) {
    throw http_error{403, "command not allowed",
                     json{{"command", argv[0]},
                          {"allowed", cfg_.allowed_commands},
                          {"setting", "ALLOWED_COMMANDS"}}};
  }
  ptk::command cmd(argv[0]);
  cmd.args(std::vector<std::string>(argv.begin() + 1, argv.end()))
      .std_in(ptk::stdio::null)
      .std_out(ptk::stdio::pipe)
      .std_err(ptk::stdio::to_stdout)
      .new_process_group()
      .parent_death_signal(SIGKILL);
  std::string cwd;
  if (const auto it = body.find("cwd"); it != body.end()) {
    if (!it->is_string()) bad_field("cwd", "a directory path");
    cwd = it->get<std::string>();
    std::error_code ec;
    if (!std::filesystem::is_directory(cwd, ec)) {
      throw http_error{400, "cwd is not a directory", json{{"cwd", cwd}}};
    }
    cmd.cwd(cwd);
  }
  if (const auto it = body.find("env"); it != body.end()) {
    if (!it->is_object()) bad_field("env", "an object of string values");
    for (const auto& [k, v] : it->items()) {
      if (!v.is_string() || k.empty() || k.find('=') != std::string::npos) {
        bad_field("env", "an object of string values with names without '='");
      }
      cmd.env(k, v.get<std::string>());
    }
  }
  const double timeout =
      number_field(body, "timeout", cfg_.process_timeout, 0.001, cfg_.process_timeout);

  if (running_processes() >= cfg_.max_processes) {
    throw http_error{429, "too many running processes",
                     json{{"limit", "MAX_PROCESSES"}, {"value", cfg_.max_processes}}};
  }
  ptk::process child;
  try {
    child = ptk::spawn(cmd);
  } catch (const std::system_error& e) {
    throw http_error{400, "spawn failed", json{{"reason", e.what()}, {"argv", argv}}};
  }
  auto p = std::make_shared<tracked_process>(io_, std::move(child));
  p->pid = p->proc.pid();
  p->argv = argv;
  p->cwd = cwd;
  p->started = unix_now();
  p->timeout = timeout;
  // The supervisor owns the read end of the output pipe, as an asio descriptor.
  const int out_fd = ::fcntl(p->proc.std_out().fd(), F_DUPFD_CLOEXEC, 3);
  p->proc.std_out().close();
  asio::posix::stream_descriptor out(p->strand);
  if (out_fd >= 0) out.assign(out_fd);
  {
    const std::lock_guard lock(mutex_);
    processes_[p->pid] = p;
    ++processes_total_;
    // Keep the newest 256 finished processes for inspection.
    std::size_t finished = 0;
    for (auto it = processes_.rbegin(); it != processes_.rend(); ++it) {
      const std::lock_guard plock(it->second->mutex);
      if (it->second->status) ++finished;
    }
    for (auto it = processes_.begin(); finished > 256 && it != processes_.end();) {
      bool done = false;
      {
        const std::lock_guard plock(it->second->mutex);
        done = it->second->status.has_value() && it->second->output_eof;
      }
      if (done && it->first != p->pid) {
        it = processes_.erase(it);
        --finished;
      } else {
        ++it;
      }
    }
  }
  metrics_.process_created->Increment();
  hub_.publish("process.started", {{"pid", p->pid}, {"argv", argv}});  // before its exit event
  asio::co_spawn(p->strand, supervise(p, std::move(out)), asio::detached);
  response r = json_response(201, describe(*p, false));
  r.headers.emplace_back("Location", "/api/cpp/process/" + std::to_string(p->pid) + "/status");
  co_return r;
}

asio::awaitable<void> app::supervise(std::shared_ptr<tracked_process> p,
                                     asio::posix::stream_descriptor out) {
  auto reader = std::make_shared<asio::posix::stream_descriptor>(std::move(out));
  asio::co_spawn(p->strand, read_output(p, reader), asio::detached);

  // The timeout: terminate a child that runs too long.
  auto limit = std::make_shared<asio::steady_timer>(p->strand);
  limit->expires_after(
      std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(p->timeout)));
  limit->async_wait([this, p](std::error_code ec) {
    if (ec) return;
    asio::co_spawn(p->strand, end_process(p, "timeout", std::chrono::duration<double>(2.0)),
                   asio::detached);
  });

  std::error_code ec;
  const ptk::exit_status s = co_await ptk::async_wait_exit(
      p->strand, p->proc, asio::redirect_error(asio::use_awaitable, ec));
  limit->cancel();
  {
    const std::lock_guard lock(p->mutex);
    p->status = s;
    p->ended = unix_now();
    if (p->ended_by.empty()) p->ended_by = "exit";
  }
  p->changed.notify();
  hub_.publish("process.exited", {{"pid", p->pid}, {"exit", exit_json(s)}});
  // A grandchild may keep the pipe open: stop reading a second after the exit.
  auto linger = std::make_shared<asio::steady_timer>(p->strand, std::chrono::seconds(1));
  co_await linger->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  std::error_code ignored;
  reader->close(ignored);
}

asio::awaitable<void> app::read_output(std::shared_ptr<tracked_process> p,
                                       std::shared_ptr<asio::posix::stream_descriptor> out) {
  std::array<char, 16384> buf;
  while (out->is_open()) {
    std::error_code ec;
    const std::size_t n = co_await out->async_read_some(
        asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    {
      const std::lock_guard lock(p->mutex);
      p->output.append(buf.data(), n);
      if (p->output.size() > tracked_process::max_output) {
        const std::size_t drop = p->output.size() - tracked_process::max_output;
        p->output.erase(0, drop);
        p->dropped += drop;
      }
    }
    p->changed.notify();
  }
  {
    const std::lock_guard lock(p->mutex);
    p->output_eof = true;
  }
  p->changed.notify();
}

asio::awaitable<void> app::end_process(std::shared_ptr<tracked_process> p, std::string why,
                                       std::chrono::duration<double> grace) {
  {
    const std::lock_guard lock(p->mutex);
    if (p->status) co_return;
    if (p->ended_by.empty()) p->ended_by = why;
  }
  signal_group(*p, SIGTERM);
  signal_group(*p, SIGCONT);
  const auto exited = [&] {
    const std::lock_guard lock(p->mutex);
    return p->status.has_value();
  };
  const auto wait_exit = [&](steady::time_point deadline) -> asio::awaitable<bool> {
    for (;;) {
      const auto seen = p->changed.version();
      if (exited()) co_return true;
      if (steady::now() >= deadline) co_return false;
      co_await p->changed.wait(seen, deadline);
    }
  };
  if (co_await wait_exit(steady::now() + std::chrono::duration_cast<steady::duration>(grace))) {
    co_return;
  }
  signal_group(*p, SIGKILL);
  co_await wait_exit(steady::now() + std::chrono::seconds(10));
}

std::shared_ptr<tracked_process> app::find_process(const request& req) {
  const std::lock_guard lock(mutex_);
  return find_tracked(processes_, req, "pid", "process");
}

json app::describe(tracked_process& p, bool detail) {
  json j = {{"pid", p.pid}, {"argv", p.argv}, {"started", p.started}, {"timeout", p.timeout}};
  if (!p.cwd.empty()) j["cwd"] = p.cwd;
  std::optional<ptk::exit_status> status;
  {
    const std::lock_guard lock(p.mutex);
    status = p.status;
    j["output_bytes"] = p.dropped + p.output.size();
    if (status) {
      j["ended"] = p.ended;
      j["ended_by"] = p.ended_by;
    }
  }
  if (status) {
    j["state"] = status->signaled() ? "killed" : "exited";
    j["exit"] = exit_json(*status);
    j["cpu_seconds"] = seconds(status->usage().user_time + status->usage().system_time);
    j["rss_bytes"] = status->usage().max_rss_bytes;
    return j;
  }
  j["state"] = "running";
  j["exit"] = nullptr;
  try {
    const auto info = ptk::process_info(p.pid);
    j["cpu_seconds"] = seconds(info.user_time + info.system_time);
    j["rss_bytes"] = info.rss_bytes;
    if (detail) {
      j["process_info"] = {{"ppid", info.ppid},
                           {"name", info.name},
                           {"state", std::string(1, info.state)},
                           {"threads", info.threads},
                           {"rss_bytes", info.rss_bytes},
                           {"vm_bytes", info.vm_bytes},
                           {"user_seconds", seconds(info.user_time)},
                           {"system_seconds", seconds(info.system_time)},
                           {"uid", info.uid},
                           {"cmdline", info.cmdline}};
    }
  } catch (const std::exception&) {
    // It exited between the check and the read; the supervisor reaps it shortly.
    j["cpu_seconds"] = nullptr;
    j["rss_bytes"] = nullptr;
  }
  return j;
}

asio::awaitable<response> app::process_list(request&) {
  std::vector<std::shared_ptr<tracked_process>> all;
  {
    const std::lock_guard lock(mutex_);
    for (auto& [pid, p] : processes_) all.push_back(p);
  }
  json list = json::array();
  std::size_t running = 0;
  for (auto& p : all) {
    list.push_back(describe(*p, false));
    if (list.back()["state"] == "running") ++running;
  }
  co_return json_response(200, json{{"processes", list},
                                    {"count", list.size()},
                                    {"running", running},
                                    {"limit", cfg_.max_processes}});
}

asio::awaitable<response> app::process_status(request& req) {
  auto p = find_process(req);
  co_return json_response(200, describe(*p, true));
}

asio::awaitable<response> app::process_delete(request& req) {
  auto p = find_process(req);
  const double grace = static_cast<double>(query_int(req, "grace_ms", 2000, 0, 60000)) / 1000.0;
  bool was_running = false;
  {
    const std::lock_guard lock(p->mutex);
    was_running = !p->status;
  }
  if (was_running) {
    // The termination runs on the process's strand; this handler waits for the exit.
    asio::co_spawn(p->strand, end_process(p, "request", std::chrono::duration<double>(grace)),
                   asio::detached);
    const auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(
                                              std::chrono::duration<double>(grace + 10));
    for (;;) {
      const auto seen = p->changed.version();
      {
        const std::lock_guard lock(p->mutex);
        if (p->status) break;
      }
      if (steady::now() >= deadline) {
        throw http_error{504, "the process did not exit after SIGKILL", json{{"pid", p->pid}}};
      }
      co_await p->changed.wait(seen, deadline);
    }
  }
  json j = describe(*p, false);
  j["was_running"] = was_running;
  co_return json_response(200, j);
}

asio::awaitable<response> app::process_output(request& req) {
  auto p = find_process(req);
  const bool follow = req.query_param("follow").value_or("true") != "false";
  response r;
  r.content_type = "text/plain; charset=utf-8";
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.stream = [p, follow](chunk_writer& w) -> asio::awaitable<void> {
    std::uint64_t pos = 0;  // absolute offset in the process's output
    for (;;) {
      const auto seen = p->changed.version();
      std::string chunk;
      bool done = false;
      {
        const std::lock_guard lock(p->mutex);
        pos = std::max<std::uint64_t>(pos, p->dropped);
        const std::uint64_t end = p->dropped + p->output.size();
        if (pos < end) chunk = p->output.substr(static_cast<std::size_t>(pos - p->dropped));
        pos = end;
        done = (p->output_eof && p->status) || !follow;
      }
      co_await w.write(chunk);
      if (done) co_return;
      co_await p->changed.wait(seen);
    }
  };
  co_return r;
}

asio::awaitable<response> app::process_pool_submit(request& req) {
  const json body = parse_body(req, {"function", "n", "ms", "mode"});
  const std::string fn =
      choice_field(body, "function", "fib", {"fib", "prime_count", "sleep", "crash"});
  const std::string mode = choice_field(body, "mode", "sync", {"sync", "background"});
  const long long n = int_field(body, "n", fn == "prime_count" ? 100000 : 25, 0,
                                fn == "prime_count" ? 50'000'000 : 40);
  const long long ms = int_field(body, "ms", 100, 0, 60000);
  auto run = [this, fn, n, ms]() -> json {
    const auto t0 = steady::now();
    try {
      long long value = 0;
      if (fn == "fib")
        value = process_pool_.submit(tasks::remote_fib, static_cast<int>(n)).get();
      else if (fn == "prime_count")
        value = process_pool_.submit(tasks::remote_prime_count, n).get();
      else if (fn == "sleep")
        value = process_pool_.submit(tasks::remote_sleep, ms).get();
      else
        value = process_pool_.submit(tasks::remote_crash, 0).get();
      return {{"status", "done"}, {"function", fn}, {"value", value}, {"elapsed_ms", ms_since(t0)}};
    } catch (const ptk::process_pool_error& e) {
      return {{"status", "failed"},
              {"function", fn},
              {"error", pool_error(e)},
              {"elapsed_ms", ms_since(t0)}};
    }
  };
  if (mode == "sync") {
    json result =
        co_await ptk::async_run(on_pool(waiters_, ptk::priority::normal, run), asio::use_awaitable);
    co_return json_response(200, result);
  }
  check_job_capacity();
  json job = new_job("process_pool", body);
  waiters_.post([this, job, run]() mutable {
    json result = run();
    const bool failed = result["status"] == "failed";
    finish_job(job, failed ? json(nullptr) : result, failed ? result["error"] : json(nullptr));
  });
  response r = json_response(202, job);
  r.headers.emplace_back("Location", "/api/cpp/jobs/" + job["id"].get<std::string>());
  co_return r;
}

// ---- threads -----------------------------------------------------------------------

std::size_t app::running_threads() {
  const std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (auto& [tid, t] : threads_) {
    const auto s = t->thread.state();
    n += s == ptk::thread_state::created || s == ptk::thread_state::running ? 1 : 0;
  }
  return n;
}

asio::awaitable<response> app::thread_create(request& req) {
  const json body = parse_body(req, {"name", "task", "ms", "n"});
  std::string name = "api-thread";
  if (const auto it = body.find("name"); it != body.end()) {
    if (!it->is_string() || it->get<std::string>().empty() || it->get<std::string>().size() > 64) {
      bad_field("name", "a string of 1 to 64 characters");
    }
    name = it->get<std::string>();
  }
  const std::string task = choice_field(body, "task", "sleep", {"sleep", "cpu", "fib", "fail"});
  const long long ms = int_field(body, "ms", 1000, 0, 600'000);
  const long long n = int_field(body, "n", 30, 0, 40);
  if (running_threads() >= cfg_.max_threads) {
    throw http_error{429, "too many running threads",
                     json{{"limit", "MAX_THREADS"}, {"value", cfg_.max_threads}}};
  }
  auto t = std::make_shared<tracked_thread>();
  t->name = name;
  t->task = task;
  t->params = {{"ms", ms}, {"n", n}};
  t->created = unix_now();
  tracked_thread* raw = t.get();  // the thread never outlives its record (last member)
  t->thread = ptk::thread(name, [this, raw, task, ms, n](std::stop_token stop) {
    const auto t0 = steady::now();
    json result;
    try {
      if (task == "sleep")
        result = {{"slept_ms", tasks::sleep_ms(ms, stop)}};
      else if (task == "cpu")
        result = {{"primes_found", tasks::spin_ms(ms, stop)}};
      else if (task == "fib")
        result = {{"fib", tasks::fib(static_cast<int>(n))}};
      else
        throw std::runtime_error("the task failed on purpose");
      result["stopped"] = stop.stop_requested();
      result["elapsed_ms"] = ms_since(t0);
    } catch (const std::exception& e) {
      {
        const std::lock_guard lock(raw->mutex);
        raw->result = {{"error", e.what()}, {"elapsed_ms", ms_since(t0)}};
        raw->ended = unix_now();
      }
      hub_.publish("thread.finished",
                   {{"tid", ptk::this_thread_id()}, {"name", raw->name}, {"state", "failed"}});
      throw;  // ptk::thread records it: state "failed", exception()
    }
    {
      const std::lock_guard lock(raw->mutex);
      raw->result = result;
      raw->ended = unix_now();
    }
    hub_.publish("thread.finished",
                 {{"tid", ptk::this_thread_id()}, {"name", raw->name}, {"state", "finished"}});
  });
  t->tid = t->thread.native_id();
  {
    const std::lock_guard lock(mutex_);
    threads_[t->tid] = t;
    ++threads_total_;
    // Keep the newest 256 ended threads.
    std::size_t ended = 0;
    for (auto& [tid, x] : threads_) {
      const auto s = x->thread.state();
      ended += s == ptk::thread_state::finished || s == ptk::thread_state::failed ? 1 : 0;
    }
    for (auto it = threads_.begin(); ended > 256 && it != threads_.end();) {
      const auto s = it->second->thread.state();
      if (s == ptk::thread_state::finished || s == ptk::thread_state::failed) {
        it = threads_.erase(it);
        --ended;
      } else {
        ++it;
      }
    }
  }
  metrics_.thread_created->Increment();
  hub_.publish("thread.started", {{"tid", t->tid}, {"name", name}, {"task", task}});
  response r = json_response(201, describe(*t, false));
  r.headers.emplace_back("Location", "/api/cpp/thread/state/" + std::to_string(t->tid));
  co_return r;
}

std::shared_ptr<tracked_thread> app::find_thread(const request& req) {
  const std::lock_guard lock(mutex_);
  return find_tracked(threads_, req, "tid", "thread");
}

json app::describe(tracked_thread& t, bool detail) {
  const auto state = t.thread.state();
  json j = {{"tid", t.tid},         {"name", t.name},
            {"task", t.task},       {"params", t.params},
            {"created", t.created}, {"state", std::string(ptk::to_string(state))}};
  {
    const std::lock_guard lock(t.mutex);
    j["result"] = t.result;
    if (t.ended > 0) j["ended"] = t.ended;
  }
  if (state == ptk::thread_state::failed) {
    try {
      std::rethrow_exception(t.thread.exception());
    } catch (const std::exception& e) {
      j["error"] = e.what();
    } catch (...) {
      j["error"] = "unknown exception";
    }
  }
  if (detail) {
    j["kernel"] = nullptr;
    if (state == ptk::thread_state::running) {
      try {
        const auto k = ptk::thread_info(t.tid);
        j["kernel"] = {{"name", k.name},
                       {"state", std::string(1, k.state_letter)},
                       {"state_name", std::string(ptk::to_string(k.state))},
                       {"user_seconds", seconds(k.user_time)},
                       {"system_seconds", seconds(k.system_time)},
                       {"voluntary_context_switches", k.voluntary_context_switches},
                       {"nonvoluntary_context_switches", k.nonvoluntary_context_switches},
                       {"last_cpu", k.last_cpu},
                       {"priority", k.priority},
                       {"nice", k.nice}};
      } catch (const std::exception&) {
        // It ended between the two reads.
      }
    }
  }
  return j;
}

asio::awaitable<response> app::thread_list(request&) {
  std::vector<std::shared_ptr<tracked_thread>> all;
  {
    const std::lock_guard lock(mutex_);
    for (auto& [tid, t] : threads_) all.push_back(t);
  }
  json list = json::array();
  for (auto& t : all) list.push_back(describe(*t, false));
  co_return json_response(
      200, json{{"threads", list}, {"count", list.size()}, {"limit", cfg_.max_threads}});
}

asio::awaitable<response> app::thread_state(request& req) {
  auto t = find_thread(req);
  co_return json_response(200, describe(*t, true));
}

asio::awaitable<response> app::async_demo(request& req) {
  const long long n = query_int(req, "coroutines", 10, 1, 10000);
  const long long ms = query_int(req, "ms", 200, 0, 10000);
  // A strand of its own: the sleeping coroutines must not hold this connection's.
  strand_type timers = asio::make_strand(io_);
  json result = co_await ptk::async_run(sleep_together(timers, n, std::chrono::milliseconds(ms)),
                                        asio::use_awaitable);
  co_return json_response(200, result);
}

asio::awaitable<response> app::thread_pool_submit(request& req) {
  const json body = parse_body(req, {"task", "n", "ms", "mode", "priority"});
  const std::string task = choice_field(body, "task", "fib", {"fib", "primes", "sleep"});
  const std::string mode = choice_field(body, "mode", "sync", {"sync", "background"});
  const auto prio = choice_field(body, "priority", "normal", {"normal", "high"}) == "high"
                        ? ptk::priority::high
                        : ptk::priority::normal;
  const long long n =
      int_field(body, "n", task == "primes" ? 100000 : 25, 0, task == "primes" ? 50'000'000 : 40);
  const long long ms = int_field(body, "ms", 100, 0, 60000);
  auto stop = pool_.get_stop_token();
  auto run = [task, n, ms, stop] { return task_result(task, n, ms, stop); };
  if (mode == "sync") {
    json result = co_await ptk::async_run(on_pool(pool_, prio, run), asio::use_awaitable);
    co_return json_response(200, result);
  }
  check_job_capacity();
  json job = new_job("thread_pool", body);
  pool_.post(prio, [this, job, run]() mutable { finish_job(job, run(), nullptr); });
  response r = json_response(202, job);
  r.headers.emplace_back("Location", "/api/cpp/jobs/" + job["id"].get<std::string>());
  co_return r;
}

// ---- jobs ----------------------------------------------------------------------------

void app::check_job_capacity() {
  const std::lock_guard lock(mutex_);
  if (active_jobs_.size() >= cfg_.max_jobs) {
    throw http_error{503, "too many background jobs",
                     json{{"limit", "MAX_JOBS"}, {"value", cfg_.max_jobs}}};
  }
}

json app::new_job(std::string kind, json request_body) {
  json job = {{"id", new_id()},        {"kind", std::move(kind)},
              {"state", "running"},    {"request", std::move(request_body)},
              {"created", unix_now()}, {"result", nullptr},
              {"error", nullptr}};
  job["status_url"] = "/api/cpp/jobs/" + job["id"].get<std::string>();
  {
    const std::lock_guard lock(mutex_);
    active_jobs_[job["id"]] = job;
  }
  store_.save_job(job);
  metrics_.jobs_submitted->Increment();
  return job;
}

void app::finish_job(json job, json result, json error) {
  job["state"] = error.is_null() ? "done" : "failed";
  job["result"] = std::move(result);
  job["error"] = std::move(error);
  job["finished"] = unix_now();
  job["elapsed_ms"] = (job["finished"].get<double>() - job["created"].get<double>()) * 1000.0;
  try {
    store_.save_job(job);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ptk-server: saving job %s: %s\n", job["id"].get<std::string>().c_str(),
                 e.what());
  }
  {
    const std::lock_guard lock(mutex_);
    active_jobs_.erase(job["id"].get<std::string>());
  }
  hub_.publish("job.done", {{"id", job["id"]}, {"kind", job["kind"]}, {"state", job["state"]}});
}

asio::awaitable<response> app::job_get(request& req) {
  const std::string& id = req.params.at("id");
  {
    const std::lock_guard lock(mutex_);
    if (const auto it = active_jobs_.find(id); it != active_jobs_.end()) {
      co_return json_response(200, it->second);
    }
  }
  if (auto j = store_.job(id)) co_return json_response(200, *j);
  throw http_error{404, "no such job", json{{"id", id}, {"hint", "GET /api/cpp/jobs"}}};
}

asio::awaitable<response> app::job_list(request& req) {
  const auto limit = static_cast<std::size_t>(query_int(req, "limit", 50, 1, 1000));
  co_return json_response(200, json{{"jobs", store_.jobs(limit)}});
}

// ---- comparison ------------------------------------------------------------------------

asio::awaitable<response> app::comparison_metrics(request&) {
  const auto s = pool_.stats();
  const auto p = process_pool_.stats();
  std::size_t active_jobs = 0;
  std::uint64_t processes_total = 0;
  std::uint64_t threads_total = 0;
  std::size_t tracked_processes = 0;
  std::size_t tracked_threads = 0;
  {
    const std::lock_guard lock(mutex_);
    active_jobs = active_jobs_.size();
    processes_total = processes_total_;
    threads_total = threads_total_;
    tracked_processes = processes_.size();
    tracked_threads = threads_.size();
  }
  co_return json_response(
      200,
      json{{"processes",
            {{"running", running_processes()},
             {"tracked", tracked_processes},
             {"created_total", processes_total},
             {"limit", cfg_.max_processes}}},
           {"threads",
            {{"running", running_threads()},
             {"tracked", tracked_threads},
             {"created_total", threads_total},
             {"limit", cfg_.max_threads}}},
           {"thread_pool",
            {{"workers", s.workers},
             {"queued", s.queued},
             {"running", s.running},
             {"executed", s.executed},
             {"stolen", s.stolen}}},
           {"process_pool",
            {{"workers_alive", p.workers_alive},
             {"queued", p.tasks_queued},
             {"running", p.tasks_running},
             {"done", p.tasks_done},
             {"failed", p.tasks_failed},
             {"crashes", p.crashes},
             {"restarts", p.restarts}}},
           {"channels", {{"events", hub_.stats()}}},
           {"jobs", {{"active", active_jobs}, {"limit", cfg_.max_jobs}}},
           {"http", {{"connections", http_ != nullptr ? http_->connections() : 0}}},
           {"uptime_seconds", std::chrono::duration<double>(steady::now() - started_).count()}});
}

json app::run_benchmark(const json& params) {
  const std::string scenario = params.at("scenario");
  const auto tasks_n = params.at("tasks").get<long long>();
  const auto size = params.at("n").get<long long>();
  const auto workers = params.at("workers").get<unsigned>();
  const auto timed = [](auto&& f) {
    const auto t0 = steady::now();
    f();
    return ms_since(t0);
  };
  json results = json::array();
  // Threads: a ptk::thread_pool of `workers` threads.
  results.push_back({{"approach", "threads"}, {"elapsed_ms", timed([&] {
                                                 ptk::thread_pool tp(workers);
                                                 std::vector<ptk::future<long long>> fs;
                                                 for (long long i = 0; i < tasks_n; ++i) {
                                                   fs.push_back(tp.submit([&] {
                                                     return scenario == "cpu"
                                                                ? tasks::fib(static_cast<int>(size))
                                                                : tasks::sleep_ms(size);
                                                   }));
                                                 }
                                                 for (auto& f : fs) (void)f.get();
                                               })}});
  // Processes: the server's ptk::process_pool.
  results.push_back({{"approach", "processes"},
                     {"elapsed_ms", timed([&] {
                        std::vector<ptk::future<long long>> fs;
                        for (long long i = 0; i < tasks_n; ++i) {
                          if (scenario == "cpu") {
                            fs.push_back(
                                process_pool_.submit(tasks::remote_fib, static_cast<int>(size)));
                          } else {
                            fs.push_back(process_pool_.submit(tasks::remote_sleep, size));
                          }
                        }
                        for (auto& f : fs) (void)f.get();
                      })}});
  // Coroutines: all on one thread (ptk::sync_wait here), like asyncio's event loop.
  results.push_back({{"approach", "coroutines"},
                     {"elapsed_ms", timed([&] {
                        ptk::timer_queue timers;
                        std::vector<ptk::task<long long>> ts;
                        for (long long i = 0; i < tasks_n; ++i) {
                          ts.push_back([](ptk::timer_queue& tq, std::string sc,
                                          long long sz) -> ptk::task<long long> {
                            if (sc == "cpu") co_return tasks::fib(static_cast<int>(sz));
                            co_await ptk::sleep_for(tq, std::chrono::milliseconds(sz));
                            co_return sz;
                          }(timers, scenario, size));
                        }
                        (void)ptk::sync_wait(ptk::when_all(std::move(ts)));
                      })}});
  std::string fastest;
  double best = 0;
  for (const auto& r : results) {
    if (fastest.empty() || r["elapsed_ms"].get<double>() < best) {
      best = r["elapsed_ms"];
      fastest = r["approach"];
    }
  }
  return {{"scenario", scenario},
          {"tasks", tasks_n},
          {"n", size},
          {"workers", workers},
          {"process_pool_size", cfg_.process_pool_size},
          {"results", results},
          {"fastest", fastest},
          {"created", unix_now()},
          {"explanation", scenario == "cpu"
                              ? "CPU-bound: threads and processes use every core; coroutines "
                                "on one thread run one after another"
                              : "I/O-bound: coroutines overlap every wait on one thread; threads "
                                "and processes are limited by how many there are"}};
}

asio::awaitable<response> app::benchmark_run(request& req) {
  json body = parse_body(req, {"scenario", "tasks", "n", "workers"});
  json params;
  params["scenario"] = choice_field(body, "scenario", "cpu", {"cpu", "io"});
  const bool cpu = params["scenario"] == "cpu";
  params["tasks"] = int_field(body, "tasks", 8, 1, 256);
  params["n"] = int_field(body, "n", cpu ? 27 : 100, 1, cpu ? 35 : 5000);
  params["workers"] = int_field(body, "workers", 2, 1, 64);
  check_job_capacity();
  json job = new_job("benchmark", params);
  waiters_.post([this, job, params]() mutable {
    try {
      json result = run_benchmark(params);
      result["job_id"] = job["id"];
      result["result_id"] = store_.add_result(result);
      finish_job(job, result, nullptr);
    } catch (const std::exception& e) {
      finish_job(job, nullptr, json{{"type", "error"}, {"message", e.what()}});
    }
  });
  response r = json_response(202, job);
  r.headers.emplace_back("Location", "/api/cpp/jobs/" + job["id"].get<std::string>());
  co_return r;
}

asio::awaitable<response> app::comparison_results(request& req) {
  const auto limit = static_cast<std::size_t>(query_int(req, "limit", 20, 1, 1000));
  co_return json_response(200, json{{"results", store_.results(limit)}});
}

// ---- service -------------------------------------------------------------------------

asio::awaitable<response> app::health(request&) {
  const bool ready = !stopping_;
  static const std::string ok_body = json{{"status", "ok"}, {"ready", true}}.dump();
  if (ready) {
    response r;
    r.static_body = ok_body;
    co_return r;
  }
  co_return json_response(503, json{{"status", "stopping"}, {"ready", false}});
}

asio::awaitable<response> app::metrics_text(request&) {
  if (!cfg_.enable_metrics) {
    throw http_error{404, "metrics are disabled", json{{"setting", "ENABLE_METRICS"}}};
  }
  response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = metrics_.text();
  co_return r;
}

asio::awaitable<response> app::docs_page(request&) {
  if (swagger_files_.count("swagger-ui-bundle.js") == 0) {
    throw http_error{503, "Swagger UI is not installed",
                     json{{"swagger_ui_dir", cfg_.swagger_ui_dir},
                          {"fix", "scripts/install-deps (npm package swagger-ui-dist)"}}};
  }
  response r;
  r.content_type = "text/html; charset=utf-8";
  r.body = R"(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ptk-server API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout"
});
</script>
</body>
</html>
)";
  co_return r;
}

asio::awaitable<response> app::docs_file(request& req) {
  const std::string& name = req.params.at("file");
  const auto it = swagger_files_.find(name);
  if (it == swagger_files_.end()) throw http_error{404, "no such file", json{{"file", name}}};
  response r;
  r.body = it->second;
  r.content_type = name.ends_with(".css")  ? "text/css"
                   : name.ends_with(".js") ? "application/javascript"
                                           : "image/png";
  r.headers.emplace_back("Cache-Control", "max-age=3600");
  co_return r;
}

asio::awaitable<void> app::shutdown() {
  stopping_ = true;
  hub_.stop();  // WebSocket clients get a close frame (1001, going away)
  std::vector<std::shared_ptr<tracked_process>> all;
  {
    const std::lock_guard lock(mutex_);
    for (auto& [pid, p] : processes_) all.push_back(p);
  }
  // Every child at once: SIGTERM, the grace period, then SIGKILL; wait for each reap.
  const auto grace = std::chrono::duration<double>(cfg_.shutdown_grace);
  for (auto& p : all) asio::co_spawn(p->strand, end_process(p, "shutdown", grace), asio::detached);
  const auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(grace) +
                        std::chrono::seconds(10);
  for (auto& p : all) {
    for (;;) {
      const auto seen = p->changed.version();
      {
        const std::lock_guard lock(p->mutex);
        if (p->status) break;
      }
      if (steady::now() >= deadline) break;
      co_await p->changed.wait(seen, deadline);
    }
  }
  {
    const std::lock_guard lock(mutex_);
    for (auto& [tid, t] : threads_) t->thread.request_stop();
  }
  // Pending process-pool tasks fail as cancelled (their jobs are stored as failed);
  // queued thread-pool work is discarded (its jobs read "interrupted" after a restart).
  process_pool_.shutdown(ptk::shutdown_mode::immediate);
  waiters_.shutdown(ptk::shutdown_policy::discard);
  pool_.shutdown(ptk::shutdown_policy::discard);
  // The event fan-out's pending receive must end before the queue goes away.
  co_await hub_.drained(steady::now() + std::chrono::seconds(3));
  // Let the connections that stop() closed finish their coroutines (bounded).
  const auto drained = steady::now() + std::chrono::seconds(3);
  asio::steady_timer tick(co_await asio::this_coro::executor);
  while (http_ != nullptr && http_->connections() > 0 && steady::now() < drained) {
    tick.expires_after(std::chrono::milliseconds(10));
    std::error_code ec;
    co_await tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}
}  // namespace server
