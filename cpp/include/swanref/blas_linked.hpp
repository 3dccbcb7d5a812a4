// swanref/blas_linked.hpp: fill swanref::blas::table() from a BLAS/LAPACK
// linked at build time (standalone builds: C API library, C++ tests,
// embedding). Not used by the Python extension, which takes SciPy's copy.
//
// Symbol names are PREFIX + name + "_" (Fortran convention). Define
// SWANREF_BLAS_PREFIX before including (CMake does it: "scipy_" for the
// scipy-openblas32 wheel, empty for a system BLAS/LAPACK).
#pragma once

#include "swanref/blas.hpp"

#ifndef SWANREF_BLAS_PREFIX
#define SWANREF_BLAS_PREFIX
#endif
#define SWANREF_BLAS_CAT2(a, b) a##b##_
#define SWANREF_BLAS_CAT(a, b) SWANREF_BLAS_CAT2(a, b)
#define SWANREF_BLAS_SYM(name) SWANREF_BLAS_CAT(SWANREF_BLAS_PREFIX, name)

extern "C" {
swanref::blas::gemm_fn<float> SWANREF_BLAS_SYM(sgemm);
swanref::blas::gemm_fn<double> SWANREF_BLAS_SYM(dgemm);
swanref::blas::syrk_fn<float> SWANREF_BLAS_SYM(ssyrk);
swanref::blas::syrk_fn<double> SWANREF_BLAS_SYM(dsyrk);
swanref::blas::symm_fn<float> SWANREF_BLAS_SYM(ssymm);
swanref::blas::symm_fn<double> SWANREF_BLAS_SYM(dsymm);
swanref::blas::gesdd_fn<float> SWANREF_BLAS_SYM(sgesdd);
swanref::blas::gesdd_fn<double> SWANREF_BLAS_SYM(dgesdd);
swanref::blas::syevd_fn<float> SWANREF_BLAS_SYM(ssyevd);
swanref::blas::syevd_fn<double> SWANREF_BLAS_SYM(dsyevd);
swanref::blas::geqrf_fn<float> SWANREF_BLAS_SYM(sgeqrf);
swanref::blas::geqrf_fn<double> SWANREF_BLAS_SYM(dgeqrf);
swanref::blas::ormqr_fn<float> SWANREF_BLAS_SYM(sormqr);
swanref::blas::ormqr_fn<double> SWANREF_BLAS_SYM(dormqr);
}

namespace swanref {
namespace blas {

inline void use_linked_blas(Table& t = table()) {
  t.sgemm = &SWANREF_BLAS_SYM(sgemm);
  t.dgemm = &SWANREF_BLAS_SYM(dgemm);
  t.ssyrk = &SWANREF_BLAS_SYM(ssyrk);
  t.dsyrk = &SWANREF_BLAS_SYM(dsyrk);
  t.ssymm = &SWANREF_BLAS_SYM(ssymm);
  t.dsymm = &SWANREF_BLAS_SYM(dsymm);
  t.sgesdd = &SWANREF_BLAS_SYM(sgesdd);
  t.dgesdd = &SWANREF_BLAS_SYM(dgesdd);
  t.ssyevd = &SWANREF_BLAS_SYM(ssyevd);
  t.dsyevd = &SWANREF_BLAS_SYM(dsyevd);
  t.sgeqrf = &SWANREF_BLAS_SYM(sgeqrf);
  t.dgeqrf = &SWANREF_BLAS_SYM(dgeqrf);
  t.sormqr = &SWANREF_BLAS_SYM(sormqr);
  t.dormqr = &SWANREF_BLAS_SYM(dormqr);
  t.source = "linked";
}

}  // namespace blas
}  // namespace swanref
