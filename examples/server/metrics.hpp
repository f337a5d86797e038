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
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace server {

class metrics {
 public:
  metrics();

  /// Creates the series of the next route (in router registration order), so that a
  /// request never takes the family's lock or builds a label set.
  void add_route(const std::string& method, const std::string& route);
  /// Records one request of the route with that index (router::unmatched: none).
  void observe(std::size_t route_index, int status, double seconds);
  /// Set by the application: refreshes the gauges that mirror pool and table state.
  std::function<void(metrics&)> refresh;
  /// @return every metric family, after refresh().
  std::vector<prometheus::MetricFamily> collect();
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
  route_series series(const std::string& method, const std::string& route);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Histogram>* durations_ = nullptr;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  std::vector<route_series> routes_;  // filled before serving, by route index
  route_series unmatched_;
  std::mutex refresh_mutex_;
};

}  // namespace server
