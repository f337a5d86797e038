// ptk-server's SQLite file: benchmark results and background-job history, so both
// survive a restart. Thread-safe (one connection, serialised).
#pragma once

#include <nlohmann/json.hpp>

#include <mutex>
#include <optional>
#include <string>

struct sqlite3;

namespace server {

class store {
 public:
  /// Opens (creating if needed) the database file; jobs a previous run left queued or
  /// running are marked "interrupted". Throws std::runtime_error naming the file.
  explicit store(const std::string& path);
  ~store();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  /// Inserts or replaces a job (its "id" field is the key).
  void save_job(const nlohmann::json& job);
  /// @return the job, if known.
  std::optional<nlohmann::json> job(const std::string& id);
  /// @return the newest `limit` jobs, newest first.
  nlohmann::json jobs(std::size_t limit);
  /// Stores a benchmark result; @return its row id.
  long long add_result(const nlohmann::json& result);
  /// @return the newest `limit` results, newest first.
  nlohmann::json results(std::size_t limit);
  /// @return jobs marked interrupted when this store was opened.
  [[nodiscard]] long long interrupted_at_open() const noexcept { return interrupted_; }

 private:
  void exec(const char* sql);
  nlohmann::json query_json(const char* sql, long long limit);

  std::mutex mutex_;
  sqlite3* db_ = nullptr;
  std::string path_;
  long long interrupted_ = 0;
};

}  // namespace server
