// swanref/version.hpp: the version of the numerical spec this core implements.
#pragma once

#define SWANREF_VERSION_MAJOR 0
#define SWANREF_VERSION_MINOR 1
#define SWANREF_VERSION_PATCH 0

namespace swanref {
inline constexpr const char* spec_version = "0.1";
inline constexpr const char* version = "0.1.0";
}  // namespace swanref
