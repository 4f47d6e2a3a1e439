#include "server/chat_service.h"

#include <memory>
#include <mutex>

#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include "absl/strings/str_format.h"
#include "server/convert.h"
#include "server/dispatch.h"

namespace sinkserve {

// Deltas queued while a write is in flight (or before the pump reaches the
// stream) are merged, up to this many ids.
constexpr size_t kMaxTokensPerDelta = 64;


// One Chat stream. It forwards every request to the engine, in order, and
// writes what the outbox yields; the engine alone keeps the conversation's
// protocol state and ends the stream with an EndEvent. What the reactor
// holds is only what gRPC needs, under mu_:
//   writing_:   a StartWrite is outstanding (gRPC allows one at a time);
//   dead_:      the call is cancelled or the client is gone, so the next
//               chance to finish takes it;
//   finished_:  Finish was called (exactly once).
// Reads: one StartRead outstanding until the client half-closes, the call
// dies, or a request cannot be read.
class ChatReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                          public WritePump::Stream {
 public:
  ChatReactor(ChatServiceImpl* service, std::string client)
      : service_(service), engine_(service->engine_), outbox_(engine_->NewOutbox()), client_(std::move(client)) {
    service_->open_streams_.fetch_add(1);
    // The hook runs on the engine thread: it only queues this stream for the
    // pump, which calls PumpWrite.
    outbox_->SetNotify([this] { service_->pump_.Kick(this); });
    StartRead(&request_bytes_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      engine_->HalfClose(outbox_);  // the stream ends once its turn is done
      return;
    }
    if (!grpc::SerializationTraits<v1::ChatRequest>::Deserialize(&request_bytes_, &request_).ok()) {
      engine_->EndStream(outbox_, NotAChatRequest());  // and read no more
      return;
    }
    if (request_.has_turn() && service_->metrics_ != nullptr) {
      std::lock_guard<std::mutex> lock(mu_);
      metric_.emplace(service_->metrics_, "grpc");
    }
    if (absl::Status status = Dispatch(*engine_, outbox_, request_, client_); !status.ok()) {
      engine_->EndStream(outbox_, status);  // and read no more
      return;
    }
    StartRead(&request_bytes_);
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) dead_ = true;  // the client is gone
    }
    TryWrite();
  }

  void OnCancel() override {
    // Client disconnect or deadline: finishing detaches the session (OnDone),
    // which stops its generation at once.
    {
      std::lock_guard<std::mutex> lock(mu_);
      dead_ = true;
    }
    TryWrite();
  }

  void OnDone() override {
    outbox_->ClearNotify();  // no hook runs after this returns, so no new kick
    service_->pump_.Forget(this);
    engine_->Detach(outbox_);  // the one place a stream leaves its session
    service_->open_streams_.fetch_sub(1);
    delete this;
  }

 private:
  void PumpWrite() override { TryWrite(); }

  // Starts the next write, or finishes the stream. Called from reactions and
  // from the write pump; never blocks beyond mu_.
  void TryWrite() {
    std::unique_lock<std::mutex> lock(mu_);
    if (writing_ || finished_) return;
    if (dead_) {
      finished_ = true;
      lock.unlock();
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled (client gone or deadline passed)"));
      return;
    }
    std::optional<ChatEvent> event = outbox_->PopMerged(kMaxTokensPerDelta);
    if (!event) return;
    if (const auto* end = std::get_if<EndEvent>(&*event)) {
      finished_ = true;
      const grpc::Status status = ToGrpcStatus(end->status);
      lock.unlock();
      Finish(status);
      return;
    }
    if (metric_) {
      if (const auto* delta = std::get_if<DeltaEvent>(&*event)) metric_->Delta(static_cast<int64_t>(delta->token_ids.size()));
      if (const auto* done = std::get_if<DoneEvent>(&*event)) {
        metric_->Done(*done);
        metric_.reset();
      }
    }
    ToProto(*event, &response_);
    bool own_buffer = false;
    response_bytes_.Clear();  // the last write's bytes; Serialize wants an empty buffer
    if (!grpc::SerializationTraits<v1::ChatResponse>::Serialize(response_, &response_bytes_, &own_buffer).ok()) {
      // Only a message over 2 GiB fails to serialize; ours are bounded.
      finished_ = true;
      lock.unlock();
      Finish(grpc::Status(grpc::StatusCode::INTERNAL, "could not serialize a response"));
      return;
    }
    writing_ = true;
    lock.unlock();
    StartWrite(&response_bytes_);
  }

  ChatServiceImpl* service_;
  Engine* engine_;
  std::shared_ptr<Outbox> outbox_;
  const std::string client_;        // the identity its sessions count against
  grpc::ByteBuffer request_bytes_;  // the outstanding read's target
  v1::ChatRequest request_;         // the last request, parsed
  std::mutex mu_;
  v1::ChatResponse response_;
  grpc::ByteBuffer response_bytes_;  // the outstanding write's source
  bool writing_ = false;
  bool dead_ = false;
  bool finished_ = false;
  std::optional<Metrics::Turn> metric_;  // the running turn's, under mu_
};

// A Chat call without a valid API key: finished at once.
class RejectedChat final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  RejectedChat() { Finish(Unauthenticated()); }
  void OnDone() override { delete this; }

  static grpc::Status Unauthenticated() {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "a valid API key is required: metadata 'authorization: Bearer KEY'");
  }
};

std::string PeerIdentity(std::string_view peer) {
  // gRPC writes "ipv4:1.2.3.4:5678", "ipv6:[::1]:5678" or "unix:/path".
  if (peer.starts_with("ipv4:") || peer.starts_with("ipv6:")) {
    if (const size_t colon = peer.rfind(':'); colon > 4) peer = peer.substr(0, colon);
  }
  return std::string(peer);
}

std::optional<std::string> ChatServiceImpl::Identify(grpc::CallbackServerContext* context) const {
  if (keys_ == nullptr || !keys_->enabled()) return PeerIdentity(context->peer());
  const auto& metadata = context->client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  return keys_->Identify(std::string_view(it->second.data(), it->second.size()));
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ChatServiceImpl::Chat(
    grpc::CallbackServerContext* context) {
  std::optional<std::string> client = Identify(context);
  if (!client) return new RejectedChat();
  return new ChatReactor(this, *std::move(client));
}

grpc::ServerUnaryReactor* ChatServiceImpl::GetSession(grpc::CallbackServerContext* context,
                                                      const v1::GetSessionRequest* request,
                                                      v1::SessionInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const std::optional<std::string> client = Identify(context);
  if (!client) {
    reactor->Finish(RejectedChat::Unauthenticated());
    return reactor;
  }
  if (request->session_id().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "session_id is empty"));
    return reactor;
  }
  engine_->GetSession(request->session_id(), *client, [reactor, response](absl::StatusOr<SessionSnapshot> snapshot) {
    if (snapshot.ok()) ToProto(*snapshot, response);
    reactor->Finish(ToGrpcStatus(snapshot.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::DeleteSession(grpc::CallbackServerContext* context,
                                                         const v1::DeleteSessionRequest* request,
                                                         v1::DeleteSessionResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const std::optional<std::string> client = Identify(context);
  if (!client) {
    reactor->Finish(RejectedChat::Unauthenticated());
    return reactor;
  }
  if (request->session_id().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "session_id is empty"));
    return reactor;
  }
  engine_->DeleteSession(request->session_id(), *client,
                         [reactor](absl::Status status) { reactor->Finish(ToGrpcStatus(status)); });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::GetServerInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetServerInfoRequest*, v1::ServerInfo* response) {
  if (!Identify(context)) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(RejectedChat::Unauthenticated());
    return reactor;
  }
  *response = info_;
  response->set_active_sessions(static_cast<uint32_t>(engine_->stats().sessions));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace sinkserve
