// swanref/swanref.hpp: everything of the C++ core in one include.
#pragma once

#include "swanref/blas.hpp"
#include "swanref/grad_norm.hpp"
#include "swanref/interrupt.hpp"
#include "swanref/newton_schulz.hpp"
#include "swanref/polynomial.hpp"
#include "swanref/scale.hpp"
#include "swanref/sinkgd.hpp"
#include "swanref/status.hpp"
#include "swanref/swan.hpp"
#include "swanref/symmetric.hpp"
#include "swanref/version.hpp"
#include "swanref/view.hpp"
#include "swanref/whiten_exact.hpp"
