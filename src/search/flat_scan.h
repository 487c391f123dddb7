// Exact inner-product top-k over a contiguous [n, dim] float32 array: the search behind the
// default `Flat` index. One query reads every stored vector once, so the scan is memory-bound;
// it streams rows with AVX-512 dot products (four rows at a time) on all compute threads and
// keeps a small heap per thread.
#pragma once
#include <cstdint>

namespace clipkit::search {

// Best min(k, n) rows by q·xb[i], highest first; ties keep the lower row first. Writes row
// positions (not ids) to pos and scores to score; returns how many were written.
int64_t flat_top_k(const float* xb, int64_t n, int dim, const float* q, int64_t k, float* score, int64_t* pos);

// out[i] = q·rows[i] in single precision (within dim·2⁻²³ of the exact product for unit vectors),
// for rows anywhere in memory: the passing items of a filter, read in place. Runs on all compute
// threads when there are many.
void score_rows(const float* q, const float* const* rows, int64_t n, int dim, float* out);

// out[j·n + i] = q_j·rows[i] for nq queries (q: nq × dim), each row read once for all of them;
// the same precision as score_rows.
void score_rows_multi(const float* q, int nq, const float* const* rows, int64_t n, int dim, float* out);

}  // namespace clipkit::search
