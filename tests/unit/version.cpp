#include <ptk/version.hpp>

#include <string>

#include "catch.hpp"

TEST_CASE("PTK_VERSION_STRING spells out the numeric version macros") {
  const std::string expected = std::to_string(PTK_VERSION_MAJOR) + "." +
                               std::to_string(PTK_VERSION_MINOR) + "." +
                               std::to_string(PTK_VERSION_PATCH);
  CHECK(expected == PTK_VERSION_STRING);
}

TEST_CASE("PTK_VERSION orders versions numerically") {
  STATIC_REQUIRE(PTK_VERSION ==
                 PTK_VERSION_MAJOR * 10000 + PTK_VERSION_MINOR * 100 + PTK_VERSION_PATCH);
  STATIC_REQUIRE(PTK_VERSION_MINOR < 100);
  STATIC_REQUIRE(PTK_VERSION_PATCH < 100);
}
