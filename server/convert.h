// Translation between the wire types (sinkserve/v1/chat.proto) and the
// engine's plain data, and the one place absl::Status becomes grpc::Status.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/chat_types.h"
#include "sinkserve/v1/chat.pb.h"

namespace sinkserve {

grpc::Status ToGrpcStatus(const absl::Status& status);

// INVALID_ARGUMENT for an unknown enum value.
absl::StatusOr<OpenRequest> FromProto(const v1::Open& open);
TurnRequest FromProto(const v1::Turn& turn);

v1::CachePolicy ToProto(CachePolicy policy);
void ToProto(const CacheConfig& cache, v1::CacheConfig* out);
v1::FinishReason ToProto(FinishReason reason);
void ToProto(const TurnUsage& usage, v1::Usage* out);
void ToProto(const SessionSnapshot& snapshot, v1::SessionInfo* out);

// Fills `out` for a non-terminal event (opened, delta, done); returns false
// for an EndEvent, which ends the stream instead.
bool ToProto(const ChatEvent& event, v1::ChatResponse* out);

}  // namespace sinkserve
