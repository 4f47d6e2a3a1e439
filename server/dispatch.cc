#include "server/dispatch.h"

#include "server/convert.h"

namespace sinkserve {

absl::Status NotAChatRequest() {
  return absl::InvalidArgumentError(
      "a request is not a ChatRequest (malformed protobuf, or a string field that is not valid UTF-8); the stream "
      "ends");
}

absl::Status ParseChatRequest(std::string_view bytes, v1::ChatRequest* request) {
  if (!request->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return NotAChatRequest();
  return absl::OkStatus();
}

absl::Status Dispatch(Engine& engine, const std::shared_ptr<Outbox>& outbox, const v1::ChatRequest& request,
                      const std::string& client) {
  switch (request.kind_case()) {
    case v1::ChatRequest::kOpen: {
      absl::StatusOr<OpenRequest> open = FromProto(request.open());
      if (!open.ok()) return open.status();
      open->client = client;
      engine.Open(outbox, *std::move(open));
      return absl::OkStatus();
    }
    case v1::ChatRequest::kTurn:
      engine.StartTurn(outbox, FromProto(request.turn()));
      return absl::OkStatus();
    case v1::ChatRequest::kCancel:
      engine.Cancel(outbox);
      return absl::OkStatus();
    case v1::ChatRequest::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("empty ChatRequest: set one of open, turn or cancel");
}

}  // namespace sinkserve
