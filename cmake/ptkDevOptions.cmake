# ptk_dev: an internal INTERFACE target carrying warnings and sanitizers for ptk's own
# tests, examples and benchmarks. ptk::ptk itself never imposes flags on its users.
add_library(ptk_dev INTERFACE)
target_link_libraries(ptk_dev INTERFACE ptk::ptk)

target_compile_options(ptk_dev INTERFACE
  -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow
  -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Woverloaded-virtual
  -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough
  # (No -Wnull-dereference: at -O2 GCC 12 reports it inside asio's and Boost's
  # inlined code, which ptk's asio-facing tests and benchmarks include.)
  # GCC before 14 flags designated initializers that leave members to their
  # default member initializers, which is exactly how ptk's option structs are
  # meant to be used: pool{{.workers = 2}}.
  -Wno-missing-field-initializers)
# asio 1.24 (Debian 12) enables asio::awaitable for Clang only with the old
# <experimental/coroutine>; Clang 14 with libstdc++ 12 supports C++20 coroutines fine.
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  target_compile_definitions(ptk_dev INTERFACE ASIO_HAS_CO_AWAIT=1)
endif()

if(PTK_WERROR)
  target_compile_options(ptk_dev INTERFACE -Werror)
endif()

if(PTK_SANITIZE)
  set(_ptk_san_flags -fsanitize=${PTK_SANITIZE} -fno-omit-frame-pointer -g)
  if(PTK_SANITIZE MATCHES "undefined")
    list(APPEND _ptk_san_flags -fno-sanitize-recover=all)
  endif()
  # GCC warns that TSan does not model atomic_thread_fence; ptk avoids fences under
  # TSan (detail/atomic.hpp), but asio, used by the asio-facing tests, has them.
  if(PTK_SANITIZE MATCHES "thread" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    list(APPEND _ptk_san_flags -Wno-tsan)
  endif()
  target_compile_options(ptk_dev INTERFACE ${_ptk_san_flags})
  target_link_options(ptk_dev INTERFACE -fsanitize=${PTK_SANITIZE})
endif()
