// swanref/blas.hpp: a table of Fortran-style BLAS/LAPACK function pointers,
// filled at run time, plus typed wrappers (gemm<T>, syrk<T>, ...).
//
// Who fills it:
//  * the Python extension (cpp/python/module.cpp) from SciPy's
//    scipy.linalg.cython_blas / cython_lapack __pyx_capi__ capsules, so the
//    process has one OpenBLAS (SciPy's) and one thread pool;
//  * a standalone build through swanref/blas_linked.hpp from a BLAS/LAPACK
//    linked by CMake (e.g. the scipy-openblas32 wheel, symbols "scipy_dgemm_").
// Signatures are the Fortran ones (every argument by pointer, LP64 int, no
// hidden string-length arguments), exactly as the SciPy capsules declare them.
#pragma once

#include <climits>
#include <string>
#include <vector>

#include "swanref/status.hpp"
#include "swanref/view.hpp"

namespace swanref {
namespace blas {

using fint = int;  // LP64

template <class T>
using gemm_fn = void(char* transa, char* transb, fint* m, fint* n, fint* k, T* alpha, T* a, fint* lda,
                     T* b, fint* ldb, T* beta, T* c, fint* ldc);
template <class T>
using syrk_fn = void(char* uplo, char* trans, fint* n, fint* k, T* alpha, T* a, fint* lda, T* beta, T* c,
                     fint* ldc);
template <class T>
using symm_fn = void(char* side, char* uplo, fint* m, fint* n, T* alpha, T* a, fint* lda, T* b, fint* ldb,
                     T* beta, T* c, fint* ldc);
template <class T>
using gesdd_fn = void(char* jobz, fint* m, fint* n, T* a, fint* lda, T* s, T* u, fint* ldu, T* vt,
                      fint* ldvt, T* work, fint* lwork, fint* iwork, fint* info);
template <class T>
using syevd_fn = void(char* jobz, char* uplo, fint* n, T* a, fint* lda, T* w, T* work, fint* lwork,
                      fint* iwork, fint* liwork, fint* info);
template <class T>
using geqrf_fn = void(fint* m, fint* n, T* a, fint* lda, T* tau, T* work, fint* lwork, fint* info);
template <class T>
using ormqr_fn = void(char* side, char* trans, fint* m, fint* n, fint* k, T* a, fint* lda, T* tau, T* c,
                      fint* ldc, T* work, fint* lwork, fint* info);

struct Table {
  gemm_fn<float>* sgemm = nullptr;
  gemm_fn<double>* dgemm = nullptr;
  syrk_fn<float>* ssyrk = nullptr;
  syrk_fn<double>* dsyrk = nullptr;
  symm_fn<float>* ssymm = nullptr;
  symm_fn<double>* dsymm = nullptr;
  gesdd_fn<float>* sgesdd = nullptr;
  gesdd_fn<double>* dgesdd = nullptr;
  syevd_fn<float>* ssyevd = nullptr;
  syevd_fn<double>* dsyevd = nullptr;
  geqrf_fn<float>* sgeqrf = nullptr;
  geqrf_fn<double>* dgeqrf = nullptr;
  ormqr_fn<float>* sormqr = nullptr;
  ormqr_fn<double>* dormqr = nullptr;
  const char* source = "none";  // who filled the table (for diagnostics)
};

// Names of the entries, in declaration order (for fillers and diagnostics).
inline const std::vector<std::string>& entry_names() {
  static const std::vector<std::string> names = {"sgemm",  "dgemm",  "ssyrk",  "dsyrk",  "ssymm",
                                                 "dsymm",  "sgesdd", "dgesdd", "ssyevd", "dsyevd",
                                                 "sgeqrf", "dgeqrf", "sormqr", "dormqr"};
  return names;
}

// Generic access by name: pointer to the slot holding the entry (nullptr for an unknown name).
inline void** slot(Table& t, const std::string& name) {
  void** slots[] = {reinterpret_cast<void**>(&t.sgemm),  reinterpret_cast<void**>(&t.dgemm),
                    reinterpret_cast<void**>(&t.ssyrk),  reinterpret_cast<void**>(&t.dsyrk),
                    reinterpret_cast<void**>(&t.ssymm),  reinterpret_cast<void**>(&t.dsymm),
                    reinterpret_cast<void**>(&t.sgesdd), reinterpret_cast<void**>(&t.dgesdd),
                    reinterpret_cast<void**>(&t.ssyevd), reinterpret_cast<void**>(&t.dsyevd),
                    reinterpret_cast<void**>(&t.sgeqrf), reinterpret_cast<void**>(&t.dgeqrf),
                    reinterpret_cast<void**>(&t.sormqr), reinterpret_cast<void**>(&t.dormqr)};
  const auto& names = entry_names();
  for (std::size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return slots[i];
  return nullptr;
}

// The process-wide table (one per shared object that includes this header).
inline Table& table() {
  static Table t;
  return t;
}

inline std::vector<std::string> missing_entries(Table& t = table()) {
  std::vector<std::string> out;
  for (const auto& n : entry_names())
    if (*slot(t, n) == nullptr) out.push_back(n);
  return out;
}

inline bool complete(Table& t = table()) { return missing_entries(t).empty(); }

inline fint to_fint(index_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    fail(Status::size_overflow, std::string(what) + " = " + std::to_string(v) +
                                    " does not fit the 32-bit BLAS integer (LP64 BLAS)");
  return static_cast<fint>(v);
}

template <class F>
inline F* need(F* f, const char* name) {
  if (f == nullptr)
    fail(Status::blas_unavailable, std::string("BLAS/LAPACK routine ") + name +
                                       " is not available (the function table was not filled)");
  return f;
}

// ---- typed wrappers (column-major, Fortran conventions) --------------------

template <class T>
struct Routines;
template <>
struct Routines<float> {
  static gemm_fn<float>* gemm() { return need(table().sgemm, "sgemm"); }
  static syrk_fn<float>* syrk() { return need(table().ssyrk, "ssyrk"); }
  static symm_fn<float>* symm() { return need(table().ssymm, "ssymm"); }
  static gesdd_fn<float>* gesdd() { return need(table().sgesdd, "sgesdd"); }
  static syevd_fn<float>* syevd() { return need(table().ssyevd, "ssyevd"); }
  static geqrf_fn<float>* geqrf() { return need(table().sgeqrf, "sgeqrf"); }
  static ormqr_fn<float>* ormqr() { return need(table().sormqr, "sormqr"); }
};
template <>
struct Routines<double> {
  static gemm_fn<double>* gemm() { return need(table().dgemm, "dgemm"); }
  static syrk_fn<double>* syrk() { return need(table().dsyrk, "dsyrk"); }
  static symm_fn<double>* symm() { return need(table().dsymm, "dsymm"); }
  static gesdd_fn<double>* gesdd() { return need(table().dgesdd, "dgesdd"); }
  static syevd_fn<double>* syevd() { return need(table().dsyevd, "dsyevd"); }
  static geqrf_fn<double>* geqrf() { return need(table().dgeqrf, "dgeqrf"); }
  static ormqr_fn<double>* ormqr() { return need(table().dormqr, "dormqr"); }
};

template <class T>
inline void gemm(char ta, char tb, fint m, fint n, fint k, T alpha, const T* a, fint lda, const T* b,
                 fint ldb, T beta, T* c, fint ldc) {
  if (m == 0 || n == 0) return;
  Routines<T>::gemm()(&ta, &tb, &m, &n, &k, &alpha, const_cast<T*>(a), &lda, const_cast<T*>(b), &ldb,
                      &beta, c, &ldc);
}

template <class T>
inline void syrk(char uplo, char trans, fint n, fint k, T alpha, const T* a, fint lda, T beta, T* c,
                 fint ldc) {
  if (n == 0) return;
  Routines<T>::syrk()(&uplo, &trans, &n, &k, &alpha, const_cast<T*>(a), &lda, &beta, c, &ldc);
}

template <class T>
inline void symm(char side, char uplo, fint m, fint n, T alpha, const T* a, fint lda, const T* b, fint ldb,
                 T beta, T* c, fint ldc) {
  if (m == 0 || n == 0) return;
  Routines<T>::symm()(&side, &uplo, &m, &n, &alpha, const_cast<T*>(a), &lda, const_cast<T*>(b), &ldb,
                      &beta, c, &ldc);
}

inline void check_info(fint info, const char* routine) {
  if (info < 0)
    fail(Status::internal, std::string(routine) + ": illegal value in argument " + std::to_string(-info));
  if (info > 0)
    fail(Status::lapack_failure, std::string(routine) + " failed to converge (info = " +
                                     std::to_string(info) + ")");
}

// Workspace size from a LAPACK query (returned as a floating-point number), rounded up with
// a relative margin (the query's value may be rounded down when stored as float). Sizes the
// 32-bit LAPACK interface cannot take (e.g. syevd at m = 32768 asks for 2147680257 entries)
// are a size error here, not an "illegal argument" from LAPACK later.
inline fint lwork_from(double w) {
  const double need = w * (1.0 + 1e-7) + 1.0;
  if (!(w >= 0) || !(need <= static_cast<double>(INT_MAX)))
    fail(Status::size_overflow, "LAPACK workspace of " + std::to_string(w) +
                                    " entries does not fit the 32-bit LAPACK integer (LP64 LAPACK)");
  return static_cast<fint>(need);
}

}  // namespace blas
}  // namespace swanref
