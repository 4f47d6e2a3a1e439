// A small synchronous client for one Chat stream, shared by sinkserve-chat
// and sinkserve-bench: open a session, run turns, read deltas as they come.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sinkserve/v1/chat.grpc.pb.h"

namespace sinkserve::client {

absl::Status FromGrpc(const grpc::Status& status);

struct TurnResult {
  std::string text;
  std::vector<uint32_t> token_ids;
  v1::TurnDone done;
  double ttft_ms = 0;               // turn sent -> first token, as the client saw it
  std::vector<double> gaps_ms;      // per token after the first: time since the previous arrival
};

class ChatStream {
 public:
  // Opens a stream and sends `open`; fails with the server's status.
  static absl::StatusOr<std::unique_ptr<ChatStream>> Open(v1::ChatService::Stub* stub, const v1::Open& open);
  ~ChatStream();

  const v1::Opened& opened() const { return opened_; }

  // Sends `turn` and reads until its done message. `on_delta` sees each
  // delta as it arrives (may be empty).
  absl::StatusOr<TurnResult> RunTurn(const v1::Turn& turn,
                                     const std::function<void(const v1::Delta&)>& on_delta = nullptr);
  // Sends a cancel for the running turn (safe from another thread while
  // RunTurn reads).
  bool SendCancel();
  // Half-closes and returns the call's final status.
  absl::Status Close();
  // Drops the call without a goodbye (the server sees a cancellation).
  void Abort();

 private:
  ChatStream() = default;
  // Close() for a stream that ended when it should not have: never OK.
  absl::Status Failed();
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ChatRequest, v1::ChatResponse>> stream_;
  std::mutex write_mu_;
  v1::Opened opened_;
  bool closed_ = false;
};

}  // namespace sinkserve::client
