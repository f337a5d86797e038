/// @file
/// @brief ptk's version, as macros usable in `#if`.
///
/// The numbers are checked against `project(ptk VERSION ...)` when CMake configures,
/// so the header and the installed package always agree.
#pragma once

/// Major version: bumped on incompatible API changes.
#define PTK_VERSION_MAJOR 0
/// Minor version: bumped on compatible additions.
#define PTK_VERSION_MINOR 1
/// Patch version: bumped on fixes.
#define PTK_VERSION_PATCH 0
/// The version as a string literal, "MAJOR.MINOR.PATCH".
#define PTK_VERSION_STRING "0.1.0"
/// The version as one comparable number, MAJOR * 10000 + MINOR * 100 + PATCH.
///
/// @code
/// #if PTK_VERSION >= 100   // 0.1.0 or later
/// #endif
/// @endcode
#define PTK_VERSION (PTK_VERSION_MAJOR * 10000 + PTK_VERSION_MINOR * 100 + PTK_VERSION_PATCH)
