// swanref/version.hpp: the single source of the swanref version. CMake parses the three
// numbers for project(VERSION), scikit-build-core's regex metadata provider for the Python
// package version (pyproject.toml), and swanref._core / swanref_version() report the string
// built from them; tests/test_version.py checks that all of these agree.
#pragma once

#define SWANREF_VERSION_MAJOR 0
#define SWANREF_VERSION_MINOR 3
#define SWANREF_VERSION_PATCH 0

#define SWANREF_VERSION_STR2(x) #x
#define SWANREF_VERSION_STR(x) SWANREF_VERSION_STR2(x)
#define SWANREF_VERSION_STRING                                                                 \
  SWANREF_VERSION_STR(SWANREF_VERSION_MAJOR)                                                   \
  "." SWANREF_VERSION_STR(SWANREF_VERSION_MINOR) "." SWANREF_VERSION_STR(SWANREF_VERSION_PATCH)

namespace swanref {
// The version of the numerical spec (docs/spec.md) this core implements; it moves with the
// spec, not with every release.
inline constexpr const char* spec_version = "0.3";
inline constexpr const char* version = SWANREF_VERSION_STRING;
}  // namespace swanref
