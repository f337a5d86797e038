// Catch2 v3 where it is installed, v2.13 (Debian 12's package) otherwise.
#pragma once

#if defined(PTK_CATCH2_V3)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
