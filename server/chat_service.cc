#include "server/chat_service.h"

#include <memory>
#include <mutex>

#include "absl/strings/str_format.h"
#include "server/convert.h"

namespace sinkserve {

// One Chat stream. State machine, all under mu_:
//   reads:  one StartRead outstanding until the client half-closes, the call
//           dies, or a protocol error ends the stream;
//   writes: at most one StartWrite outstanding; each OnWriteDone (or the
//           outbox's notify hook) pops the next event;
//   finish: exactly once, when no write is outstanding: on an EndEvent from
//           the outbox, on cancellation, or once the client half-closed and
//           neither an open nor a turn awaits its answer.
// Protocol errors the reactor detects itself go through the outbox as an
// EndEvent too, so they are ordered after every response already queued.
// Deltas queued while a write is in flight (or before the pump reaches the
// stream) are merged, up to this many ids.
constexpr size_t kMaxTokensPerDelta = 64;

class ChatReactor final : public grpc::ServerBidiReactor<v1::ChatRequest, v1::ChatResponse>,
                          public WritePump::Stream {
 public:
  explicit ChatReactor(ChatServiceImpl* service)
      : service_(service), engine_(service->engine_), outbox_(engine_->NewOutbox()) {
    service_->open_streams_.fetch_add(1);
    // The hook runs on the engine thread: it only queues this stream for the
    // pump, which calls PumpWrite.
    outbox_->SetNotify([this] { service_->pump_.Kick(this); });
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        read_done_ = true;
      }
      TryWrite();
      return;
    }
    absl::Status status = Handle(request_);
    if (!status.ok()) {
      outbox_->Push(EndEvent{status});  // stops reading; notify writes it
      return;
    }
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;  // the client is gone
    }
    if (!ok) engine_->Detach(outbox_);
    TryWrite();
  }

  void OnCancel() override {
    // Client disconnect or deadline: generation stops at once.
    engine_->Detach(outbox_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
    }
    TryWrite();
  }

  void OnDone() override {
    outbox_->ClearNotify();  // no hook runs after this returns, so no new kick
    service_->pump_.Forget(this);
    engine_->Detach(outbox_);
    service_->open_streams_.fetch_sub(1);
    delete this;
  }

 private:
  absl::Status Handle(const v1::ChatRequest& request) {
    switch (request.kind_case()) {
      case v1::ChatRequest::kOpen: {
        if (opened_) return absl::FailedPreconditionError("open was already sent on this stream; send turns");
        absl::StatusOr<OpenRequest> open = FromProto(request.open());
        if (!open.ok()) return open.status();
        opened_ = true;
        {
          std::lock_guard<std::mutex> lock(mu_);
          open_pending_ = true;
        }
        engine_->Open(outbox_, *std::move(open));
        return absl::OkStatus();
      }
      case v1::ChatRequest::kTurn: {
        if (!opened_) return absl::FailedPreconditionError("a turn arrived before open; send open first");
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (turn_running_) {
            return absl::FailedPreconditionError(
                "a turn is already running on this stream; wait for its done message or send cancel");
          }
          turn_running_ = true;
        }
        engine_->StartTurn(outbox_, FromProto(request.turn()));
        return absl::OkStatus();
      }
      case v1::ChatRequest::kCancel:
        if (opened_) engine_->Cancel(outbox_);  // a cancel with no turn is a no-op
        return absl::OkStatus();
      case v1::ChatRequest::KIND_NOT_SET:
        break;
    }
    return absl::InvalidArgumentError("empty ChatRequest: set one of open, turn or cancel");
  }

  void PumpWrite() override { TryWrite(); }

  // Starts the next write, or finishes the stream. Called from reactions and
  // from the write pump; never blocks beyond mu_.
  void TryWrite() {
    std::unique_lock<std::mutex> lock(mu_);
    if (writing_ || finished_) return;
    if (cancelled_) {
      finished_ = true;
      lock.unlock();
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled (client gone or deadline passed)"));
      return;
    }
    std::optional<ChatEvent> event = outbox_->PopMerged(kMaxTokensPerDelta);
    if (!event) {
      if (read_done_ && !turn_running_ && !open_pending_) {
        finished_ = true;
        lock.unlock();
        Finish(grpc::Status::OK);
      }
      return;
    }
    if (const auto* end = std::get_if<EndEvent>(&*event)) {
      finished_ = true;
      const grpc::Status status = ToGrpcStatus(end->status);
      lock.unlock();
      engine_->Detach(outbox_);
      Finish(status);
      return;
    }
    if (std::holds_alternative<DoneEvent>(*event)) turn_running_ = false;
    if (std::holds_alternative<OpenedEvent>(*event)) open_pending_ = false;
    ToProto(*event, &response_);
    writing_ = true;
    lock.unlock();
    StartWrite(&response_);
  }

  ChatServiceImpl* service_;
  Engine* engine_;
  std::shared_ptr<Outbox> outbox_;
  v1::ChatRequest request_;   // the outstanding read's target
  bool opened_ = false;       // reads are serialized: no lock needed
  std::mutex mu_;
  v1::ChatResponse response_;  // the outstanding write's source
  bool writing_ = false;
  bool finished_ = false;
  bool read_done_ = false;
  bool cancelled_ = false;
  bool turn_running_ = false;  // from a turn request to its done message
  bool open_pending_ = false;  // from the open request to its answer
};

grpc::ServerBidiReactor<v1::ChatRequest, v1::ChatResponse>* ChatServiceImpl::Chat(grpc::CallbackServerContext*) {
  return new ChatReactor(this);
}

grpc::ServerUnaryReactor* ChatServiceImpl::GetSession(grpc::CallbackServerContext* context,
                                                      const v1::GetSessionRequest* request,
                                                      v1::SessionInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (request->session_id().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "session_id is empty"));
    return reactor;
  }
  engine_->GetSession(request->session_id(), [reactor, response](absl::StatusOr<SessionSnapshot> snapshot) {
    if (snapshot.ok()) ToProto(*snapshot, response);
    reactor->Finish(ToGrpcStatus(snapshot.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::DeleteSession(grpc::CallbackServerContext* context,
                                                         const v1::DeleteSessionRequest* request,
                                                         v1::DeleteSessionResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (request->session_id().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "session_id is empty"));
    return reactor;
  }
  engine_->DeleteSession(request->session_id(),
                         [reactor](absl::Status status) { reactor->Finish(ToGrpcStatus(status)); });
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::GetServerInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetServerInfoRequest*, v1::ServerInfo* response) {
  *response = info_;
  response->set_active_sessions(static_cast<uint32_t>(engine_->stats().sessions));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace sinkserve
