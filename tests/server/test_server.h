// An in-process sinkserve server on a free localhost port, with stories260K
// on the CPU backend, and a real gRPC channel to it.
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"

#include "common/runtime.h"
#include "engine/engine.h"
#include "server/chat_server.h"
#include "sinkserve/v1/chat.grpc.pb.h"
#include "tests/test_data.h"

namespace sinkserve::testing {

inline constexpr char kModel[] = "models/stories260K/stories260K.bin";
inline constexpr char kVocab[] = "models/stories260K/tok512.bin";

class TestServer {
 public:
  // Loads stories260K and starts a server; check ok() (fails with a message).
  explicit TestServer(EngineConfig config = {}) {
    RuntimeOptions runtime_options;
    runtime_options.model = SharedPath(kModel);
    runtime_options.tokenizer = SharedPath(kVocab);
    runtime_options.backend.kind = "cpu";
    runtime_options.backend.threads = 1;
    auto runtime = LoadRuntime(runtime_options);
    if (!runtime.ok()) { Fail(runtime.status()); return; }
    tokenizer_ = std::move(runtime->tokenizer);
    backend_ = std::move(runtime->backend);
    config.model_name = "stories260K";
    auto engine = Engine::Create(backend_.get(), tokenizer_.get(), config);
    if (!engine.ok()) { Fail(engine.status()); return; }
    engine_ = *std::move(engine);
    ChatServerOptions server_options;
    server_options.listen = "127.0.0.1:0";
    auto server = ChatServer::Start(engine_.get(), v1::ServerInfo(), server_options);
    if (!server.ok()) { Fail(server.status()); return; }
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::ChatService::NewStub(channel_);
  }
  ~TestServer() {
    stub_.reset();
    channel_.reset();
    server_.reset();
    engine_.reset();
  }

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  v1::ChatService::Stub* stub() { return stub_.get(); }
  Engine* engine() { return engine_.get(); }
  ChatServer* server() { return server_.get(); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }

 private:
  void Fail(const absl::Status& status) { error_ = std::string(status.message()); }

  std::string error_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ChatServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ChatService::Stub> stub_;
};

// The greedy ids sinkserve-generate prints for a raw `prompt` on
// stories260K with a sinks + window cache (empty when it could not run).
// `extra` adds flags (e.g. contrastive search's).
inline std::vector<uint32_t> GenerateIds(const std::string& prompt, int new_tokens, int sinks, int window,
                                         const std::string& extra = "") {
  const std::string command = absl::StrFormat(
      "'%s' --model '%s' --tokenizer '%s' --backend cpu --threads 1 --prompt '%s' --temperature 0 --print-ids "
      "--quiet --max-new-tokens %d --sinks %d --window %d %s",
      BinaryPath("sinkserve-generate"), SharedPath(kModel), SharedPath(kVocab), prompt, new_tokens, sinks, window,
      extra);
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {};
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  pclose(pipe);
  std::istringstream in(out);
  std::vector<uint32_t> ids;
  for (uint32_t id; in >> id;) ids.push_back(id);
  return ids;
}

// A raw Chat stream for tests that need to misbehave on purpose.
struct RawStream {
  explicit RawStream(v1::ChatService::Stub* stub, int deadline_ms = 0) {
    if (deadline_ms > 0) {
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
    }
    stream = stub->Chat(&context);
  }
  bool Open(const std::string& id = "", const v1::CacheConfig& cache = {}) {
    v1::ChatRequest r;
    r.mutable_open()->set_session_id(id);
    *r.mutable_open()->mutable_cache() = cache;
    return stream->Write(r);
  }
  // Opens and reads the opened answer; the stream stays attached.
  bool OpenAttached(std::string* id, const v1::CacheConfig& cache = {}) {
    v1::ChatResponse r;
    if (!Open("", cache) || !stream->Read(&r) || !r.has_opened()) return false;
    *id = r.opened().session_id();
    return true;
  }
  // A raw greedy turn; `sampling` adds to (or overrides) temperature 0.
  bool Turn(const std::string& text, uint32_t max_new, bool ignore_eos = false,
            const v1::SamplingParams& sampling = {}) {
    v1::ChatRequest r;
    v1::Turn* t = r.mutable_turn();
    t->set_text(text);
    t->set_raw(true);
    t->set_max_new_tokens(max_new);
    t->set_ignore_eos(ignore_eos);
    t->mutable_sampling()->set_temperature(0);
    t->mutable_sampling()->MergeFrom(sampling);
    return stream->Write(r);
  }
  bool Write(const v1::ChatRequest& r) { return stream->Write(r); }
  bool Cancel() {
    v1::ChatRequest r;
    r.mutable_cancel();
    return stream->Write(r);
  }
  // Reads until a done message (collecting delta ids); false if the stream ends.
  bool ReadDone(v1::TurnDone* done, std::vector<uint32_t>* ids = nullptr, int* deltas = nullptr) {
    v1::ChatResponse response;
    while (stream->Read(&response)) {
      if (response.has_delta()) {
        if (ids) ids->insert(ids->end(), response.delta().token_ids().begin(), response.delta().token_ids().end());
        if (deltas) ++*deltas;
      }
      if (response.has_done()) {
        *done = response.done();
        return true;
      }
    }
    return false;
  }
  // Half-closes and drains; returns the final status.
  grpc::Status Finish() {
    stream->WritesDone();
    v1::ChatResponse ignored;
    while (stream->Read(&ignored)) {
    }
    return stream->Finish();
  }
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ChatRequest, v1::ChatResponse>> stream;
};

inline v1::SessionInfo GetSession(TestServer& s, const std::string& id, grpc::Status* status = nullptr) {
  grpc::ClientContext context;
  v1::GetSessionRequest request;
  request.set_session_id(id);
  v1::SessionInfo info;
  grpc::Status st = s.stub()->GetSession(&context, request, &info);
  if (status) *status = st;
  return info;
}

// Opens a session with `cache` on a stream of its own, then drops the stream
// (the session stays, detached); returns how the open went (OK with the
// opened answer in `opened`, or the error).
inline grpc::Status OpenWith(TestServer& s, const v1::CacheConfig& cache, v1::ChatResponse* opened = nullptr) {
  RawStream c(s.stub());
  if (!c.Open("", cache)) return c.Finish();
  v1::ChatResponse r;
  if (c.stream->Read(&r) && r.has_opened()) {
    if (opened != nullptr) *opened = r;
    c.context.TryCancel();
    c.stream->Finish();
    return grpc::Status::OK;
  }
  return c.Finish();
}

// An open that still works: the server serves after every refusal.
inline void ExpectStillServes(TestServer& s) {
  v1::ChatResponse r;
  EXPECT_TRUE(OpenWith(s, v1::CacheConfig(), &r).ok());
  EXPECT_EQ(r.opened().session_id().size(), 32u);
}

// The greedy ids of one raw turn through the gRPC stream, on a fresh
// sinks + window session (empty on any failure): the server's side of the
// comparisons with GenerateIds.
inline std::vector<uint32_t> GrpcIds(TestServer& s, const std::string& prompt, int new_tokens, int sinks, int window,
                                     const v1::SamplingParams& sampling = {}) {
  RawStream c(s.stub());
  v1::CacheConfig cache;
  cache.set_policy(v1::CACHE_POLICY_SINK_WINDOW);
  cache.set_sink_tokens(sinks);
  cache.set_window_tokens(window);
  v1::ChatResponse r;
  if (!c.Open("", cache) || !c.stream->Read(&r)) return {};
  // Same rules as generate: end tokens end the turn, no ignore_eos.
  if (!c.Turn(prompt, new_tokens, /*ignore_eos=*/false, sampling)) return {};
  v1::TurnDone done;
  std::vector<uint32_t> ids;
  if (!c.ReadDone(&done, &ids)) return {};
  c.Finish();
  return ids;
}

}  // namespace sinkserve::testing

#define START_SERVER(var, config)                      \
  REQUIRE_SHARED(::sinkserve::testing::kModel);        \
  ::sinkserve::testing::TestServer var(config);        \
  ASSERT_TRUE(var.ok()) << var.error()
