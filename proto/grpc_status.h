// absl::Status <-> grpc::Status, for everything that speaks gRPC (the worker's services, the host's
// worker pool): one mapping. The two libraries number their codes alike (checked below at compile
// time), so codes map one to one and messages are kept.
#pragma once

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace sd {

constexpr bool SameCode(absl::StatusCode a, grpc::StatusCode g) {
  return static_cast<int>(a) == static_cast<int>(g);
}
static_assert(
    SameCode(absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED) &&
        SameCode(absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN) &&
        SameCode(absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT) &&
        SameCode(absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED) &&
        SameCode(absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND) &&
        SameCode(absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS) &&
        SameCode(absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED) &&
        SameCode(absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED) &&
        SameCode(absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION) &&
        SameCode(absl::StatusCode::kAborted, grpc::StatusCode::ABORTED) &&
        SameCode(absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE) &&
        SameCode(absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED) &&
        SameCode(absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL) &&
        SameCode(absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE) &&
        SameCode(absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS) &&
        SameCode(absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED),
    "absl and gRPC number their status codes differently");

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// `prefix` starts the message ("worker HOST:PORT: ").
inline absl::Status FromGrpcStatus(const grpc::Status& s, const std::string& prefix = "") {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(prefix, s.error_message()));
}

}  // namespace sd
