// Must not compile: a channel of a type without a ptk::codec.
#include <ptk/ipc.hpp>

#include <string>

struct has_string {
  std::string text;  // not trivially copyable, and no codec specialisation
};

int main() {
  auto [a, b] = ptk::pipe<has_string>::create();
  (void)a;
  (void)b;
}
