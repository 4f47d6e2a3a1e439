// A Chat stream's requests as the engine sees them: the bytes a client sent
// parsed into a ChatRequest, then handed to the engine as one command. The
// gRPC reactor and the request-path fuzzer (fuzz/request_fuzz.cc) share it,
// so what the fuzzer drives is what a client reaches.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "sinkserve/v1/chat.pb.h"

namespace sinkserve {

// The status a stream ends with when a request's bytes are not a
// ChatRequest (malformed protobuf, or a string field that is not UTF-8).
absl::Status NotAChatRequest();

// Parses one request's bytes; NotAChatRequest() when they are not one.
absl::Status ParseChatRequest(std::string_view bytes, v1::ChatRequest* request);

// Hands `request` to the engine for the stream of `outbox`, opened by
// `client`. An error for a request the engine cannot be given (an empty
// one, an open with an unknown enum value): the caller ends the stream with it.
absl::Status Dispatch(Engine& engine, const std::shared_ptr<Outbox>& outbox, const v1::ChatRequest& request,
                      const std::string& client);

}  // namespace sinkserve
