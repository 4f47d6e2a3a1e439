#include "server/chat_server.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include <grpc/grpc.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace sinkserve {

absl::StatusOr<std::string> ReadPem(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  if (!in || text.str().find("-----BEGIN ") == std::string::npos || text.str().size() > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: not a readable PEM file", path));
  }
  return text.str();
}

absl::StatusOr<std::unique_ptr<ChatServer>> ChatServer::Start(Engine* engine, v1::ServerInfo info,
                                                              const ChatServerOptions& options) {
  // Both are process-wide switches read by the next ServerBuilder.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<ChatServer> server(new ChatServer());
  server->engine_ = engine;
  server->service_ = std::make_unique<ChatServiceImpl>(engine, std::move(info), options.keys, options.metrics);
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty()) {
    ASSIGN_OR_RETURN(const std::string cert, ReadPem(options.tls_cert_file));
    ASSIGN_OR_RETURN(const std::string key, ReadPem(options.tls_key_file));
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({key, cert});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  auto ms = [](double seconds) { return static_cast<int>(std::min(seconds * 1000, 2e9)); };
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms(options.keepalive_seconds));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(options.keepalive_timeout_seconds));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Clients may ping as often as every 10 s without being told off.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, ms(options.handshake_timeout_seconds));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, ms(options.connection_idle_seconds));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, static_cast<int>(options.max_streams_per_connection));
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrFormat(
        "cannot listen on %s (address in use, or not host:port?); pick another with --listen", options.listen));
  }
  const size_t colon = options.listen.rfind(':');
  server->address_ = absl::StrFormat("%s:%d", options.listen.substr(0, colon), server->port_);
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus(v1::ChatService::service_full_name(), true);
  return server;
}

ChatServer::~ChatServer() {
  if (!drained_) Drain(absl::ZeroDuration());
}

void ChatServer::Drain(absl::Duration timeout) {
  // A server whose Start failed (bad TLS files, a port it could not take)
  // has nothing to drain.
  if (drained_ || server_ == nullptr) return;
  drained_ = true;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(false);
  engine_->BeginDrain();
  const absl::Time deadline = absl::Now() + timeout;
  // BeginDrain is queued behind earlier commands; a turn started before it
  // still counts as running, so poll until none runs.
  while (absl::Now() < deadline) {
    if (engine_->stats().running_turns == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  engine_->EndAllStreams(absl::UnavailableError(
      "the server is shutting down; its sessions live only in this process and end with it, so open a new "
      "session once it is back"));
  // Streams end as their reactors finish; anything left after a grace
  // period (e.g. a stream that never opened) is cancelled.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
}

}  // namespace sinkserve
