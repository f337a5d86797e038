/// @file
/// @brief The process module: spawn and supervise child processes, capture their
///        output, inspect any process, keep a bounded table of children.
///
/// @code
/// #include <ptk/process.hpp>
/// auto r = ptk::run({"uname", "-r"});
/// std::printf("kernel %s", r.out.c_str());
/// @endcode
#pragma once

#include <ptk/process/command.hpp>
#include <ptk/process/exit_status.hpp>
#include <ptk/process/process.hpp>
#include <ptk/process/process_info.hpp>
#include <ptk/process/process_table.hpp>
#include <ptk/process/run.hpp>
