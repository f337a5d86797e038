// ptk-server's Prometheus metrics (prometheus-cpp): the original's counters and
// gauges, a request-duration histogram per route, and pool gauges refreshed at scrape.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

namespace server {

class metrics {
 public:
  metrics();

  /// Pre-creates the series of a route (so a request never takes the family's lock).
  void add_route(const std::string& method, const std::string& route);
  /// Records one request.
  void observe(std::string_view method, std::string_view route, int status, double seconds);
  /// Set by the application: refreshes the gauges that mirror pool and table state.
  std::function<void(metrics&)> refresh;
  /// @return the Prometheus text exposition of every metric (after refresh()).
  std::string text();
  /// A Collectable for prometheus::Exposer that refreshes before collecting.
  std::shared_ptr<prometheus::Collectable> collectable();

  prometheus::Counter* process_created = nullptr;
  prometheus::Counter* thread_created = nullptr;
  prometheus::Counter* jobs_submitted = nullptr;
  prometheus::Gauge* active_processes = nullptr;
  prometheus::Gauge* active_threads = nullptr;
  prometheus::Gauge* open_connections = nullptr;
  prometheus::Gauge* websocket_subscribers = nullptr;
  prometheus::Gauge* pool_workers = nullptr;
  prometheus::Gauge* pool_queued = nullptr;
  prometheus::Gauge* pool_running = nullptr;
  prometheus::Gauge* pool_executed = nullptr;
  prometheus::Gauge* pool_stolen = nullptr;
  prometheus::Gauge* ppool_workers = nullptr;
  prometheus::Gauge* ppool_queued = nullptr;
  prometheus::Gauge* ppool_running = nullptr;
  prometheus::Gauge* ppool_done = nullptr;
  prometheus::Gauge* ppool_failed = nullptr;
  prometheus::Gauge* ppool_crashes = nullptr;
  prometheus::Gauge* jobs_active = nullptr;

 private:
  struct route_series {
    prometheus::Histogram* duration = nullptr;
    std::array<prometheus::Counter*, 5> by_class{};  // 1xx..5xx
  };
  route_series& series(const std::string& method, const std::string& route);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Histogram>* durations_ = nullptr;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  std::unordered_map<std::string, route_series> routes_;  // filled before serving
  route_series unmatched_;
  std::mutex refresh_mutex_;
};

}  // namespace server
