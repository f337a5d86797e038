#include "store.hpp"

#include "http.hpp"

#include <sqlite3.h>

#include <stdexcept>

namespace server {

namespace {

struct statement {
  sqlite3_stmt* s = nullptr;
  statement(sqlite3* db, const char* sql, const std::string& path) {
    if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) {
      throw std::runtime_error("database " + path + ": " + sqlite3_errmsg(db));
    }
  }
  ~statement() { sqlite3_finalize(s); }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;
};

std::string text_column(sqlite3_stmt* s, int i) {
  const auto* p = sqlite3_column_text(s, i);
  return p != nullptr ? std::string(reinterpret_cast<const char*>(p)) : std::string{};
}

}  // namespace

store::store(const std::string& path) : path_(path) {
  if (sqlite3_open_v2(path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string why = db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("open database " + path + ": " + why);
  }
  sqlite3_busy_timeout(db_, 2000);
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=NORMAL");
  exec(
      "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, created REAL NOT NULL, "
      "state TEXT NOT NULL, body TEXT NOT NULL)");
  exec(
      "CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY AUTOINCREMENT, "
      "created REAL NOT NULL, body TEXT NOT NULL)");
  // A job a previous run never finished cannot finish now.
  const statement s(db_, "SELECT body FROM jobs WHERE state IN ('queued','running')", path_);
  std::vector<nlohmann::json> stale;
  while (sqlite3_step(s.s) == SQLITE_ROW) {
    stale.push_back(nlohmann::json::parse(text_column(s.s, 0), nullptr, false));
  }
  for (auto& j : stale) {
    if (!j.is_object()) continue;
    j["state"] = "interrupted";
    j["error"] = {{"type", "interrupted"}, {"message", "the server stopped before the job ended"}};
    save_job(j);
    ++interrupted_;
  }
}

store::~store() { sqlite3_close(db_); }

void store::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string why = err != nullptr ? err : "error";
    sqlite3_free(err);
    throw std::runtime_error("database " + path_ + ": " + why);
  }
}

void store::save_job(const nlohmann::json& job) {
  const std::lock_guard lock(mutex_);
  const statement s(db_, "INSERT OR REPLACE INTO jobs (id, created, state, body) VALUES (?,?,?,?)",
                    path_);
  const std::string id = job.at("id").get<std::string>();
  const std::string state = job.at("state").get<std::string>();
  const std::string body = to_text(job);
  sqlite3_bind_text(s.s, 1, id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_double(s.s, 2, job.value("created", 0.0));
  sqlite3_bind_text(s.s, 3, state.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(s.s, 4, body.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(s.s) != SQLITE_DONE) {
    throw std::runtime_error("database " + path_ + ": " + sqlite3_errmsg(db_));
  }
}

std::optional<nlohmann::json> store::job(const std::string& id) {
  const std::lock_guard lock(mutex_);
  const statement s(db_, "SELECT body FROM jobs WHERE id = ?", path_);
  sqlite3_bind_text(s.s, 1, id.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(s.s) != SQLITE_ROW) return std::nullopt;
  return nlohmann::json::parse(text_column(s.s, 0));
}

nlohmann::json store::query_json(const char* sql, long long limit) {
  const std::lock_guard lock(mutex_);
  const statement s(db_, sql, path_);
  sqlite3_bind_int64(s.s, 1, limit);
  auto out = nlohmann::json::array();
  while (sqlite3_step(s.s) == SQLITE_ROW) {
    auto j = nlohmann::json::parse(text_column(s.s, 0), nullptr, false);
    if (j.is_discarded()) continue;
    if (sqlite3_column_count(s.s) > 1) j["id"] = sqlite3_column_int64(s.s, 1);
    out.push_back(std::move(j));
  }
  return out;
}

nlohmann::json store::jobs(std::size_t limit) {
  return query_json("SELECT body FROM jobs ORDER BY created DESC LIMIT ?",
                    static_cast<long long>(limit));
}

long long store::add_result(const nlohmann::json& result) {
  const std::lock_guard lock(mutex_);
  const statement s(db_, "INSERT INTO results (created, body) VALUES (?,?)", path_);
  const std::string body = to_text(result);
  sqlite3_bind_double(s.s, 1, result.value("created", 0.0));
  sqlite3_bind_text(s.s, 2, body.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(s.s) != SQLITE_DONE) {
    throw std::runtime_error("database " + path_ + ": " + sqlite3_errmsg(db_));
  }
  return sqlite3_last_insert_rowid(db_);
}

nlohmann::json store::results(std::size_t limit) {
  return query_json("SELECT body, id FROM results ORDER BY id DESC LIMIT ?",
                    static_cast<long long>(limit));
}

}  // namespace server
