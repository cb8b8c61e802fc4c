#include "testing/frames.h"

#include "cqrs/net/frame_codec.h"
#include "cqrs/v1/event.pb.h"

namespace cqrs::testing {

v1::Frame HelloFrame(std::string client_name) {
  v1::Frame frame;
  auto* hello = frame.mutable_hello();
  hello->set_protocol_version(1);
  hello->set_client_name(std::move(client_name));
  return frame;
}

v1::Frame CommandFrame(std::string id, std::string subject,
                       const google::protobuf::Message& payload) {
  v1::Frame frame;
  auto* command = frame.mutable_command();
  command->set_id(std::move(id));
  command->set_subject(std::move(subject));
  command->set_type(payload.GetDescriptor()->full_name());
  command->mutable_payload()->PackFrom(payload);
  return frame;
}

std::vector<v1::Frame> OneFrameOfEachKind() {
  std::vector<v1::Frame> frames;

  v1::Frame hello = HelloFrame("corpus-client");
  hello.mutable_hello()->set_auth_token("secret-token");
  frames.push_back(hello);

  v1::Frame ack;
  ack.mutable_hello_ack()->set_protocol_version(1);
  ack.mutable_hello_ack()->set_server_name("cqrs-server");
  ack.mutable_hello_ack()->set_max_frame_bytes(4 * 1024 * 1024);
  ack.mutable_hello_ack()->set_max_in_flight(1024);
  ack.mutable_hello_ack()->set_session_id("session-7");
  frames.push_back(ack);

  // Any payload type will do for the codec; a StreamInfo is a real message of the schema.
  v1::StreamInfo stream;
  stream.set_id("user-42");
  stream.set_entity_type("User");
  v1::Frame command = CommandFrame("0b5c0a8e-8f7e-4d7e-9b1a-3c2d1e0f9a8b", "user-42", stream);
  auto* envelope = command.mutable_command();
  envelope->mutable_timestamp()->set_seconds(1'764'000'000);
  envelope->set_service_id("user-client");
  envelope->set_service_instance_id("pod-1");
  envelope->set_transaction_id("tx-1");
  envelope->set_version(1);
  envelope->mutable_deadline()->set_seconds(1'764'000'005);
  envelope->set_correlation_id("corr-1");
  envelope->set_causation_id("cause-1");
  (*envelope->mutable_metadata())["tenant"] = "acme";
  frames.push_back(command);

  v1::Frame response;
  auto* r = response.mutable_response();
  r->set_command_id("0b5c0a8e-8f7e-4d7e-9b1a-3c2d1e0f9a8b");
  r->set_status(v1::CommandResponseEnvelope::REJECTED);
  r->mutable_error()->set_message("name must not be empty");
  r->mutable_error()->set_developer_message("CreateUser.name is empty");
  r->mutable_error()->set_error_code("USER_NAME_EMPTY");
  r->add_event_offsets(41);
  r->add_event_offsets(42);
  r->set_event_epoch(3);
  frames.push_back(response);

  v1::Frame ping;
  ping.mutable_ping()->set_nonce(7);
  frames.push_back(ping);

  v1::Frame pong;
  pong.mutable_pong()->set_nonce(7);
  frames.push_back(pong);

  v1::Frame go_away;
  go_away.mutable_go_away()->set_reason("server shutting down");
  go_away.mutable_go_away()->set_drain_ms(5000);
  frames.push_back(go_away);

  v1::Frame error;
  error.mutable_error()->set_code(v1::Error::FRAME_TOO_LARGE);
  error.mutable_error()->set_message("frame length 5000000 exceeds max_frame_bytes=4194304");
  error.mutable_error()->set_fatal(true);
  frames.push_back(error);

  return frames;
}

std::string Encode(std::span<const v1::Frame> frames) {
  net::FrameEncoder encoder;
  for (const auto& frame : frames) {
    if (!encoder.Append(frame).ok()) return {};
  }
  const auto data = encoder.data();
  return {reinterpret_cast<const char*>(data.data()), data.size()};
}

std::string Header(std::uint32_t length) {
  std::string header(net::kFrameHeaderBytes, '\0');
  net::WriteFrameHeader(length, reinterpret_cast<std::byte*>(header.data()));
  return header;
}

}  // namespace cqrs::testing
