// 14 — a generator pipeline: lazy stages connected by co_yield.
//
// A ptk::generator is Python's generator function: a coroutine that `co_yield`s
// values one at a time, running only when the consumer asks for the next one. Stages
// that take a generator and yield another one form a pipeline, as in
// `total(parse(lines(text)))` in Python; nothing is computed ahead, and nothing is
// stored between stages but the value in flight. (Generators are also ranges and
// views, so std::views stages mix in with GCC and with Clang 16 or later; Clang 14
// cannot compile libstdc++ 12's views, so this program builds its stages from
// generators only.)
#include <ptk/coro/generator.hpp>

#include <cstdio>
#include <string>
#include <string_view>

namespace {

constexpr std::string_view access_log =
    "GET /index.html 200 512\n"
    "GET /missing 404 0\n"
    "POST /api/orders 201 87\n"
    "GET /api/orders 200 2048\n"
    "GET /admin 403 0\n"
    "GET /big.iso 200 1048576\n";

// Stage 1: split text into lines.
ptk::generator<std::string_view> lines(std::string_view text) {
  while (!text.empty()) {
    const auto end = text.find('\n');
    std::printf("  lines : read \"%.*s\"\n", static_cast<int>(text.substr(0, end).size()),
                text.data());
    co_yield text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
  }
}

struct request {
  std::string path;
  int status = 0;
  long bytes = 0;
};

// Stage 2: parse each line into a request.
ptk::generator<request> parse(ptk::generator<std::string_view> in) {
  for (std::string_view line : in) {
    char path[128] = {};
    request r;
    if (std::sscanf(std::string(line).c_str(), "%*s %127s %d %ld", path, &r.status, &r.bytes) ==
        3) {
      r.path = path;
      co_yield r;
    }
  }
}

// Stage 3: keep the successful requests.
ptk::generator<request&> successful(ptk::generator<request> in) {
  for (request& r : in) {
    if (r.status >= 200 && r.status < 300) co_yield r;
  }
}

// Any stage can end the pipeline early: yield the first `n` values, then stop.
template <class T>
ptk::generator<T> first(int n, ptk::generator<T> in) {
  if (n <= 0) co_return;
  for (auto&& v : in) {
    co_yield v;
    if (--n == 0) co_return;  // `in` is destroyed here, mid-sequence
  }
}

}  // namespace

int main() {
  // Stage 4, the consumer: sum the bytes.
  long total = 0;
  int count = 0;
  std::puts("pulling requests through lines -> parse -> successful:");
  for (const request& r : successful(parse(lines(access_log)))) {
    std::printf("  sum   : %-16s %8ld bytes\n", r.path.c_str(), r.bytes);
    total += r.bytes;
    ++count;
  }
  std::printf("%d successful requests, %ld bytes in all\n", count, total);

  // Laziness: first(2, ...) stops after two values; the later lines are never read.
  std::puts("\nonly the first two lines, with first(2, lines(...)):");
  for (std::string_view l : first(2, lines(access_log))) {
    std::printf("  got   : %.*s\n", static_cast<int>(l.size()), l.data());
  }
  return total == 512 + 87 + 2048 + 1048576 ? 0 : 1;
}
