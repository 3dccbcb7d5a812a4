// swanref/swan.hpp: the SWAN update direction, GradNorm followed by
// GradWhitening, for callers of the C++ core (the Python front end composes
// the two backend calls itself, with its divergence guard in between).
//
//   swan_update(G) = whiten(grad_norm(G, eps))   per (m x n) slice, m <= n.
#pragma once

#include <string>
#include <vector>

#include "swanref/grad_norm.hpp"
#include "swanref/newton_schulz.hpp"
#include "swanref/view.hpp"
#include "swanref/whiten_exact.hpp"

namespace swanref {

enum class WhitenMethod { svd, eigh, newton_schulz, nsds };

struct SwanOptions {
  double eps = 0.0;                           // GradNorm eps (added to the variance)
  WhitenMethod method = WhitenMethod::newton_schulz;
  long long steps = 10;                       // Newton-Schulz / NSDS steps
  double beta = 0.5;                          // Newton-Schulz beta
  Scaling scaling = Scaling::gram_fro;        // Newton-Schulz / NSDS scaling
  double rtol = 0.0;                          // sigma_rtol (svd) or lambda_rtol (eigh)
};

template <class T>
void swan_update(const StridedView<const T>& in, T* out, const SwanOptions& opt = {}) {
  check_whiten_shape(in.rows(), in.cols());
  std::vector<T> normed(static_cast<std::size_t>(in.size()));
  grad_norm(in, normed.data(), opt.eps);
  const StridedView<const T> nv = StridedView<const T>::contiguous(normed.data(), in.shape());
  switch (opt.method) {
    case WhitenMethod::svd: whiten_svd(nv, out, opt.rtol); break;
    case WhitenMethod::eigh: whiten_eigh(nv, out, opt.rtol); break;
    case WhitenMethod::newton_schulz: whiten_newton_schulz(nv, out, opt.steps, opt.beta, opt.scaling); break;
    case WhitenMethod::nsds: whiten_nsds(nv, out, opt.steps, opt.beta, opt.scaling); break;
  }
}

}  // namespace swanref
