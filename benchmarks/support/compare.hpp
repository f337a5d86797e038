// Side-by-side comparison for ptk's benchmarks.
//
// Benchmarks are registered as "<scenario>/<implementation>", e.g.
// "BM_roundtrip/ptk_futex" and "BM_roundtrip/pipe". After the usual console output,
// a table pairs every ptk row with every peer row of the same scenario (and the
// same arguments) and prints the ratio of their real times, measured in this one
// process run: ratio < 1 means ptk is faster. With --benchmark_repetitions, the
// medians are compared. A benchmark that measures something other than time sets
// state.counters["metric"] (lower is better), and that value is compared instead.
// A benchmark that measures peers in its own loop (interleaved with ptk, so that all
// see the same machine load) reports each as a counter named "peer:<implementation>",
// which becomes a row of that implementation in the same scenario.
#pragma once

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ptk::bench {

/// One implementation's time in one scenario.
struct result_row {
  std::string scenario;        ///< "<scenario>[/args]"
  std::string implementation;  ///< "ptk..." or a peer's name
  double real_ns = 0;          ///< real time per iteration, nanoseconds
  bool is_median = false;      ///< an aggregate over repetitions
};

/// The console reporter plus the ratio table at the end.
class comparing_reporter : public benchmark::ConsoleReporter {
 public:
  /// Colours only on a terminal, so logs and report files stay plain text.
  comparing_reporter()
      : ConsoleReporter(::isatty(STDOUT_FILENO) != 0 ? OO_ColorTabular : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      const bool median = run.run_type == Run::RT_Aggregate;
      if (median && run.aggregate_name != "median") continue;
      const std::string& fn = run.run_name.function_name;
      const auto slash = fn.find('/');
      if (slash == std::string::npos) continue;
      result_row row;
      row.scenario = fn.substr(0, slash);
      if (!run.run_name.args.empty()) row.scenario += "/" + run.run_name.args;
      row.implementation = fn.substr(slash + 1);
      const auto metric = run.counters.find("metric");
      row.real_ns =
          metric != run.counters.end()
              ? metric->second.value
              : run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit) * 1e9;
      row.is_median = median;
      for (const auto& [name, counter] : run.counters) {
        if (name.rfind("peer:", 0) != 0) continue;
        result_row peer = row;
        peer.implementation = name.substr(5);
        peer.real_ns = counter.value;
        record(std::move(peer));
      }
      record(std::move(row));
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    print_ratios(stdout);
  }

  /// Writes the ptk-versus-peer table to `out`.
  void print_ratios(std::FILE* out) const {
    bool header = false;
    const auto footnote = [&] {
      if (header) {
        std::fprintf(out,
                     "(values: real time per iteration in ns, or the benchmark's "
                     "\"metric\" counter where it sets one; lower is better)\n");
      }
    };
    for (const auto& [scenario, impls] : rows_) {
      for (const auto& [ptk_name, ptk_ns] : impls) {
        if (ptk_name.rfind("ptk", 0) != 0) continue;
        for (const auto& [peer_name, peer_ns] : impls) {
          if (peer_name.rfind("ptk", 0) == 0 || peer_ns <= 0) continue;
          if (!header) {
            std::fprintf(out, "\n%-36s %-18s %-18s %14s %14s %10s\n", "scenario", "ptk", "peer",
                         "ptk", "peer", "ptk/peer");
            header = true;
          }
          const double ratio = ptk_ns / peer_ns;
          std::fprintf(out, "%-36s %-18s %-18s %14s %14s %9.3fx %s\n", scenario.c_str(),
                       ptk_name.c_str(), peer_name.c_str(), number(ptk_ns).c_str(),
                       number(peer_ns).c_str(), ratio,
                       ratio <= 1.0 ? "(ptk faster)" : "(ptk slower)");
        }
      }
    }
    footnote();
  }

 private:
  // Plain decimals: whole numbers for nanoseconds, a few digits for small metrics.
  static std::string number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, v >= 100 ? "%.0f" : "%.4f", v);
    return buf;
  }

  void record(result_row row) {
    auto& slot = rows_[row.scenario];
    auto& medians = median_seen_[row.scenario];
    // A median, when present, replaces the individual repetitions.
    if (row.is_median) {
      medians[row.implementation] = true;
      slot[row.implementation] = row.real_ns;
    } else if (!medians[row.implementation]) {
      slot[row.implementation] = row.real_ns;
    }
  }

  std::map<std::string, std::map<std::string, double>> rows_;
  std::map<std::string, std::map<std::string, bool>> median_seen_;
};

/// main() for a ptk benchmark executable: Google Benchmark's flags, console output
/// and ratio table on stdout, and --benchmark_out files as usual.
inline int run_main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  comparing_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

}  // namespace ptk::bench

/// Defines main() for a benchmark file using the comparing reporter.
#define PTK_BENCHMARK_MAIN() \
  int main(int argc, char** argv) { return ::ptk::bench::run_main(argc, argv); }
