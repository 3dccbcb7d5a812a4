/* Example: a C program using the swanref C API (Newton-Schulz whitening in float). */
#include <math.h>
#include <stdio.h>

#include "swanref/c_api.h"

int main(void) {
  enum { M = 2, N = 3 };
  const float g[M * N] = {1.0f, 2.0f, 0.5f, -1.0f, 0.25f, 3.0f};
  float x[M * N];
  int rc = swanref_whiten_newton_schulz_f32(g, x, 1, M, N, 30, 0.5, SWANREF_SCALING_GRAM_FRO);
  if (rc != SWANREF_OK) {
    printf("error %d: %s\n", rc, swanref_last_error());
    return 1;
  }
  float d01 = 0, d00 = 0;
  for (int j = 0; j < N; ++j) {
    d00 += x[j] * x[j];
    d01 += x[j] * x[N + j];
  }
  printf("row0.row0 = %.6f, row0.row1 = %.2e\n", d00, d01);
  if (fabsf(d00 - 1.0f) > 1e-5f || fabsf(d01) > 1e-5f) return 1;
  printf("consumer_c OK\n");
  return 0;
}
