// AXON_REQUIRE_MPI(): tests that start MPI jobs skip where Axon is built without MPI (the GPU
// machine's check builds with AXON_WITH_MPI=OFF). The test target defines AXON_TESTS_WITH_MPI.
#pragma once

#include <gtest/gtest.h>

#ifdef AXON_TESTS_WITH_MPI
#define AXON_REQUIRE_MPI() \
  do {                     \
  } while (0)
#else
#define AXON_REQUIRE_MPI() GTEST_SKIP() << "built without MPI (AXON_WITH_MPI=OFF)"
#endif
