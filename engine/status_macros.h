// Early-return helpers for absl::Status / absl::StatusOr at module boundaries.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SINKSERVE_CONCAT_INNER(a, b) a##b
#define SINKSERVE_CONCAT(a, b) SINKSERVE_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                       \
  do {                                              \
    ::absl::Status sinkserve_status_ = (expr);      \
    if (!sinkserve_status_.ok()) return sinkserve_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, StatusOrExpr());` declares/assigns x or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr)                                          \
  auto SINKSERVE_CONCAT(sinkserve_or_, __LINE__) = (expr);                  \
  if (!SINKSERVE_CONCAT(sinkserve_or_, __LINE__).ok())                      \
    return SINKSERVE_CONCAT(sinkserve_or_, __LINE__).status();              \
  lhs = std::move(SINKSERVE_CONCAT(sinkserve_or_, __LINE__)).value()
