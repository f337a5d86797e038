#include "metrics.hpp"

#include <prometheus/text_serializer.h>

namespace server {

namespace {

const prometheus::Histogram::BucketBoundaries& buckets() {
  static const prometheus::Histogram::BucketBoundaries b{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  return b;
}

class refreshing_collectable final : public prometheus::Collectable {
 public:
  refreshing_collectable(metrics& m, std::shared_ptr<prometheus::Registry> r)
      : m_(m), registry_(std::move(r)) {}
  std::vector<prometheus::MetricFamily> Collect() const override { return m_.collect(); }

 private:
  metrics& m_;
  std::shared_ptr<prometheus::Registry> registry_;
};

}  // namespace

metrics::metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  auto& r = *registry_;
  const auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
  };
  const auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
  };
  process_created = counter("process_created_total", "Processes spawned through the API");
  thread_created = counter("thread_created_total", "Threads created through the API");
  jobs_submitted = counter("jobs_submitted_total", "Background jobs accepted (202)");
  active_processes = gauge("active_processes_gauge", "Spawned processes still running");
  active_threads = gauge("active_threads_gauge", "API-created threads still running");
  open_connections = gauge("http_open_connections", "HTTP connections open now");
  websocket_subscribers = gauge("websocket_subscribers", "WebSocket clients on /ws/events");
  pool_workers = gauge("thread_pool_workers", "Worker threads of the thread pool");
  pool_queued = gauge("thread_pool_queued_tasks", "Tasks waiting in the thread pool");
  pool_running = gauge("thread_pool_running_tasks", "Tasks running in the thread pool");
  pool_executed = gauge("thread_pool_executed_tasks", "Tasks the thread pool has run");
  pool_stolen = gauge("thread_pool_stolen_tasks", "Tasks a pool worker stole from another");
  ppool_workers = gauge("process_pool_workers", "Worker processes alive in the process pool");
  ppool_queued = gauge("process_pool_queued_tasks", "Tasks waiting for a worker process");
  ppool_running = gauge("process_pool_running_tasks", "Tasks sent to worker processes");
  ppool_done = gauge("process_pool_done_tasks", "Tasks the process pool finished with a result");
  ppool_failed = gauge("process_pool_failed_tasks", "Tasks that failed: exception, crash, timeout");
  ppool_crashes = gauge("process_pool_worker_crashes", "Worker processes that died on their own");
  jobs_active = gauge("jobs_active", "Background jobs queued or running");
  durations_ = &prometheus::BuildHistogram()
                    .Name("request_duration_seconds")
                    .Help("HTTP request duration, from parsed request to response sent")
                    .Register(r);
  requests_ = &prometheus::BuildCounter()
                   .Name("http_requests_total")
                   .Help("HTTP requests by method, route and status class")
                   .Register(r);
  unmatched_ = series("", "unmatched");
}

metrics::route_series metrics::series(const std::string& method, const std::string& route) {
  route_series s;
  s.duration = &durations_->Add({{"method", method}, {"route", route}}, buckets());
  for (std::size_t i = 0; i < s.by_class.size(); ++i) {
    s.by_class[i] = &requests_->Add(
        {{"method", method}, {"route", route}, {"code", std::to_string(i + 1) + "xx"}});
  }
  return s;
}

void metrics::add_route(const std::string& method, const std::string& route) {
  routes_.push_back(series(method, route));
}

void metrics::observe(std::size_t route_index, int status, double seconds) {
  const route_series& s = route_index < routes_.size() ? routes_[route_index] : unmatched_;
  s.duration->Observe(seconds);
  const int cls = status / 100;
  if (cls >= 1 && cls <= 5) s.by_class[static_cast<std::size_t>(cls - 1)]->Increment();
}

std::vector<prometheus::MetricFamily> metrics::collect() {
  {
    const std::lock_guard lock(refresh_mutex_);
    if (refresh) refresh(*this);
  }
  return registry_->Collect();
}

std::string metrics::text() { return prometheus::TextSerializer().Serialize(collect()); }

std::shared_ptr<prometheus::Collectable> metrics::collectable() {
  return std::make_shared<refreshing_collectable>(*this, registry_);
}

}  // namespace server
