// Linked into every GoogleTest program: sets the environment that tests hand down to the
// processes they start (axonrun, mpirun and its ranks). Done here, in the program, because
// ctest's per-test ENVIRONMENT does not survive gtest_discover_tests with several variables.
#include <cstdlib>

namespace {

struct TestEnvironment {
  TestEnvironment() {
    // Open MPI refuses to start as root without both.
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
#ifdef AXON_SANITIZE
    // MPI ranks run with LeakSanitizer off: Open MPI's plugins keep allocations for the life of
    // the process and their frames cannot be matched by suppressions. This program itself was
    // started with leak checks on (the variable is read at start-up), and keeps them.
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
#endif
  }
} const test_environment;

}  // namespace
