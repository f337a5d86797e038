// The program the spawn benchmarks start: linked statically and doing nothing, so exec
// is as cheap as it gets and what a spawn implementation adds shows in the figures.
int main() { return 0; }
