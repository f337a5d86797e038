#include <ptk/ipc/queue.hpp>
struct job {
  int id;
};
void run(const job&);
void f() {
  // @example include/ptk/ipc/queue.hpp 1
}
