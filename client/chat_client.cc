#include "client/chat_client.h"

#include "absl/strings/str_format.h"

namespace sinkserve::client {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::StatusOr<std::unique_ptr<ChatStream>> ChatStream::Open(v1::ChatService::Stub* stub, const v1::Open& open) {
  std::unique_ptr<ChatStream> s(new ChatStream());
  // A proxy in front of several replicas hashes on this header, so every
  // stream of a session reaches the same one (deploy/haproxy.cfg).
  if (!open.session_id().empty()) s->context_.AddMetadata("x-session-id", open.session_id());
  s->stream_ = stub->Chat(&s->context_);
  v1::ChatRequest request;
  *request.mutable_open() = open;
  v1::ChatResponse response;
  if (!s->stream_->Write(request) || !s->stream_->Read(&response)) return s->Failed();
  if (!response.has_opened()) return absl::InternalError("the server answered open with something else");
  s->opened_ = response.opened();
  return s;
}

ChatStream::~ChatStream() {
  if (!closed_) Abort();
}

absl::StatusOr<TurnResult> ChatStream::RunTurn(const v1::Turn& turn,
                                               const std::function<void(const v1::Delta&)>& on_delta) {
  v1::ChatRequest request;
  *request.mutable_turn() = turn;
  const auto start = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    if (!stream_->Write(request)) return Failed();
  }
  TurnResult result;
  auto last = start;
  v1::ChatResponse response;
  while (stream_->Read(&response)) {
    if (response.has_delta()) {
      const v1::Delta& d = response.delta();
      if (d.token_ids_size() > 0) {
        const auto now = std::chrono::steady_clock::now();
        const double ms = std::chrono::duration<double, std::milli>(now - last).count();
        // Per token: ids that arrive together (the server merges deltas for
        // a client that falls behind) arrive with no gap between them.
        if (result.token_ids.empty()) {
          result.ttft_ms = ms;
        } else {
          result.gaps_ms.push_back(ms);
        }
        result.gaps_ms.insert(result.gaps_ms.end(), d.token_ids_size() - 1, 0.0);
        last = now;
      }
      result.text += d.text();
      result.token_ids.insert(result.token_ids.end(), d.token_ids().begin(), d.token_ids().end());
      if (on_delta) on_delta(d);
    } else if (response.has_done()) {
      result.done = response.done();
      return result;
    }
  }
  return Failed();  // the stream ended mid-turn: report why
}

bool ChatStream::SendCancel() {
  v1::ChatRequest request;
  request.mutable_cancel();
  std::lock_guard<std::mutex> lock(write_mu_);
  return stream_->Write(request);
}

absl::Status ChatStream::Close() {
  if (closed_) return absl::FailedPreconditionError("stream already closed");
  closed_ = true;
  stream_->WritesDone();
  v1::ChatResponse ignored;
  while (stream_->Read(&ignored)) {
  }
  return FromGrpc(stream_->Finish());
}

absl::Status ChatStream::Failed() {
  absl::Status status = Close();
  return status.ok() ? absl::UnavailableError("the server ended the stream early") : status;
}

void ChatStream::Abort() {
  closed_ = true;
  context_.TryCancel();
  stream_->Finish();
}

}  // namespace sinkserve::client
