// The program the spawn benchmarks start: static, without even the C library (whose
// start-up, CPU feature probing included, costs more than a spawn in a VM), exiting
// at once. What a spawn implementation adds then shows in the figures.
#if defined(__x86_64__)
extern "C" [[noreturn]] void _start() {
  __asm__ volatile(
      "mov $231, %eax\n\t"  // exit_group(0)
      "xor %edi, %edi\n\t"
      "syscall");
  __builtin_unreachable();
}
#else
int main() { return 0; }
#endif
