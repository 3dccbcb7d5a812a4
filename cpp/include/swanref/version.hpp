// swanref/version.hpp: the version of the numerical spec this core implements.
#pragma once

namespace swanref {
inline constexpr const char* spec_version = "0.1";
}  // namespace swanref
