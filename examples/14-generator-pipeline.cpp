// 14 — a generator pipeline: lazy stages connected by co_yield.
//
// A ptk::generator is Python's generator function: a coroutine that `co_yield`s
// values one at a time, running only when the consumer asks for the next one. Stages
// that take a generator and yield another one form a pipeline, as in
// `total(parse(lines(text)))` in Python; nothing is computed ahead, and nothing is
// stored between stages but the value in flight. Generators are ranges, so
// std::views stages mix in freely.
#include <ptk/coro/generator.hpp>

#include <cstdio>
#include <ranges>
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
    if (std::sscanf(std::string(line).c_str(), "%*s %127s %d %ld", path, &r.status, &r.bytes) == 3) {
      r.path = path;
      co_yield r;
    }
  }
}

}  // namespace

int main() {
  // Stage 3 (std::views): keep the successful requests. Stage 4: sum their bytes.
  auto ok = [](const request& r) { return r.status >= 200 && r.status < 300; };
  long total = 0;
  int count = 0;
  std::puts("pulling requests through lines -> parse -> filter(2xx):");
  for (const request& r : parse(lines(access_log)) | std::views::filter(ok)) {
    std::printf("  sum   : %-16s %8ld bytes\n", r.path.c_str(), r.bytes);
    total += r.bytes;
    ++count;
  }
  std::printf("%d successful requests, %ld bytes in all\n", count, total);

  // Laziness: take(2) ends the loop after two values and the generator is destroyed
  // mid-text. (Range-for advances the iterator once more before take's count stops
  // it, so a third line is read; the rest never are.)
  std::puts("\nonly the first two lines, with std::views::take(2):");
  for (std::string_view l : lines(access_log) | std::views::take(2)) {
    std::printf("  got   : %.*s\n", static_cast<int>(l.size()), l.data());
  }
  return total == 512 + 87 + 2048 + 1048576 ? 0 : 1;
}
