// Writes the seed corpora of the fuzzers:
//   frame_decoder: one file per frame kind, one with every kind back to back, and a few with split
//     patterns and bad frames (format: fuzz/frame_decoder_fuzz.cc);
//   gateway_message: WebSocket client streams carrying gateway messages in both wire formats,
//     fragmented, with control frames, and a few broken ones named bad_* (format:
//     fuzz/gateway_message_fuzz.cc).
//
//   build/dev/tests/cqrs_write_fuzz_corpus fuzz/corpus

#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "cqrs/v1/gateway.pb.h"
#include "testing/frames.h"
#include "testing/websocket_frames.h"

namespace {

void Write(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// The control byte of a gateway_message input (see fuzz/gateway_message_fuzz.cc).
std::string GatewayControl(bool proto, const std::string& chunks, int limit_index = 0,
                           bool unmasked = false) {
  const int control = (proto ? 1 : 0) | static_cast<int>(chunks.size()) << 1 | limit_index << 4 |
                      (unmasked ? 0x40 : 0);
  return std::string(1, static_cast<char>(control)) + chunks;
}

void WriteGatewayMessageCorpus(const std::filesystem::path& root) {
  using cqrs::net::ws::Opcode;
  using cqrs::testing::ClientClose;
  using cqrs::testing::ClientFrame;
  const std::filesystem::path dir = root / "gateway_message";
  std::filesystem::create_directories(dir);

  const std::string subscribe_json =
      R"({"subscribe":{"subscriptionId":"s-1","channels":["users","orders.*"],"fromOffset":"42"}})";
  cqrs::v1::ClientMessage subscribe;
  subscribe.mutable_subscribe()->set_subscription_id("s-1");
  subscribe.mutable_subscribe()->add_channels("users");
  subscribe.mutable_subscribe()->add_channels("*");
  subscribe.mutable_subscribe()->set_from_offset(42);
  subscribe.mutable_subscribe()->set_epoch(7);
  cqrs::v1::ClientMessage unsubscribe;
  unsubscribe.mutable_unsubscribe()->set_subscription_id("s-1");
  cqrs::v1::ClientMessage ping;
  ping.mutable_ping()->set_nonce(9);

  // Byte by byte (no chunk lengths).
  Write(dir / "json_subscribe.bin",
        GatewayControl(false, "") + ClientFrame(Opcode::kText, subscribe_json));
  Write(dir / "proto_subscribe.bin",
        GatewayControl(true, "") + ClientFrame(Opcode::kBinary, subscribe.SerializeAsString()));
  // Chunks of 1, 5 and 200 bytes.
  const std::string chunks("\x00\x04\xc7", 3);
  Write(dir / "json_all_kinds.bin",
        GatewayControl(false, chunks) + ClientFrame(Opcode::kText, subscribe_json) +
            ClientFrame(Opcode::kText, R"({"unsubscribe":{"subscriptionId":"s-1"}})") +
            ClientFrame(Opcode::kText, R"({"ping":{"nonce":"9"}})") +
            ClientClose(cqrs::net::ws::kCloseNormal, "bye"));
  Write(dir / "proto_all_kinds.bin",
        GatewayControl(true, chunks) + ClientFrame(Opcode::kBinary, subscribe.SerializeAsString()) +
            ClientFrame(Opcode::kBinary, unsubscribe.SerializeAsString()) +
            ClientFrame(Opcode::kBinary, ping.SerializeAsString()) +
            ClientFrame(Opcode::kClose, ""));
  // A JSON message in three fragments, with a ping and a pong between them.
  Write(dir / "json_fragmented_with_ping.bin",
        GatewayControl(false, std::string("\x02\x10", 2)) +
            ClientFrame(Opcode::kText, subscribe_json.substr(0, 10), {.fin = false}) +
            ClientFrame(Opcode::kPing, "keepalive") +
            ClientFrame(Opcode::kContinuation, subscribe_json.substr(10, 30),
                        {.fin = false, .key = {1, 2, 3, 4}}) +
            ClientFrame(Opcode::kPong, "") +
            ClientFrame(Opcode::kContinuation, subscribe_json.substr(40)) +
            ClientClose(cqrs::net::ws::kCloseGoingAway, "tab closed"));
  // 16-bit length, limit 1000, unmasked frames allowed.
  cqrs::v1::ClientMessage many = subscribe;
  for (int i = 0; i < 40; ++i)
    many.mutable_subscribe()->add_channels("channel-" + std::to_string(i));
  Write(dir / "proto_long_unmasked.bin",
        GatewayControl(true, std::string("\x3f", 1), 2, true) +
            ClientFrame(Opcode::kBinary, many.SerializeAsString(), {.mask = false}) +
            ClientFrame(Opcode::kBinary, ping.SerializeAsString()));
  // Messages the gateway must refuse: no kind, unknown field, not JSON.
  Write(dir / "json_refused_messages.bin",
        GatewayControl(false, std::string("\x07", 1)) + ClientFrame(Opcode::kText, "{}") +
            ClientFrame(Opcode::kText, R"({"subscribe":{},"extra":1})") +
            ClientFrame(Opcode::kText, "not json") + ClientFrame(Opcode::kBinary, "\xff\xff"));
  // Protocol errors.
  Write(dir / "bad_oversize.bin",
        GatewayControl(false, "", 1) + ClientFrame(Opcode::kText, std::string(126, 'x')));
  Write(dir / "bad_utf8.bin", GatewayControl(false, "") +
                                  ClientFrame(Opcode::kText, "caf\xc3", {.fin = false}) +
                                  ClientFrame(Opcode::kContinuation, "\x28"));
  Write(dir / "bad_unmasked.bin",
        GatewayControl(false, "") + ClientFrame(Opcode::kText, "{}", {.mask = false}));
  Write(dir / "bad_close_code.bin", GatewayControl(true, "") + ClientClose(1005, "no"));
  std::cout << "wrote " << dir << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " <corpus root, e.g. fuzz/corpus>\n";
    return 2;
  }
  const std::filesystem::path dir = std::filesystem::path(argv[1]) / "frame_decoder";
  std::filesystem::create_directories(dir);

  const auto frames = cqrs::testing::OneFrameOfEachKind();
  for (const auto& frame : frames) {
    const std::string name = frame.GetDescriptor()->FindFieldByNumber(frame.kind_case())->name();
    // Control 0: whole-stream chunks of 1 byte (byte by byte).
    Write(dir / (name + ".bin"), std::string(1, '\0') + cqrs::testing::Encode({&frame, 1}));
  }
  const std::string all = cqrs::testing::Encode(frames);
  // Control 0xF8: chunks of 32 bytes.
  Write(dir / "all_kinds.bin", std::string(1, '\xf8') + all);
  // Control 3: three explicit chunk lengths (1, 5, 200).
  Write(dir / "all_kinds_split.bin", std::string("\x03\x00\x04\xc7", 4) + all);
  // Zero-length frame, garbage body, then a valid ping.
  Write(dir / "bad_then_good.bin", std::string(1, '\x10') + cqrs::testing::Header(0) +
                                       cqrs::testing::Header(3) + "\xff\xff\xff" +
                                       cqrs::testing::Encode({&frames[4], 1}));
  // The shapes the hand-written parsers take (the frames above carry metadata and an error,
  // which go to protobuf): a command as CommandClient::Send writes it and an OK response with a
  // reply and event offsets, byte by byte and then together in chunks of 7.
  cqrs::v1::Frame command;
  {
    cqrs::v1::CommandEnvelope& c = *command.mutable_command();
    c.set_id("0b5c0a8e-8f7e-4d7e-9b1a-3c2d1e0f9a8b");
    c.mutable_timestamp()->set_seconds(1'764'000'000);
    c.mutable_timestamp()->set_nanos(5);
    c.set_service_id("cqrs_bench");
    c.set_type("users.v1.CreateUser");
    c.set_subject("user-42");
    c.mutable_payload()->set_type_url("type.googleapis.com/users.v1.CreateUser");
    c.mutable_payload()->set_value(std::string("\x0a\x03u42\x12\x03Bob", 10));
    c.mutable_deadline()->set_seconds(1'764'000'030);
  }
  cqrs::v1::Frame ok;
  {
    cqrs::v1::CommandResponseEnvelope& r = *ok.mutable_response();
    r.set_command_id("0b5c0a8e-8f7e-4d7e-9b1a-3c2d1e0f9a8b");
    r.mutable_timestamp()->set_seconds(1'764'000'000);
    r.mutable_timestamp()->set_nanos(7);
    r.set_service_id("user-service");
    r.set_type("users.v1.CreateUserReply");
    r.mutable_payload()->set_type_url("type.googleapis.com/users.v1.CreateUserReply");
    r.mutable_payload()->set_value(std::string("\x0a\x03u42", 5));
    r.set_id("4f3c2b1a00000000-17");
    r.set_status(cqrs::v1::CommandResponseEnvelope::OK);
    r.add_event_offsets(300);
    r.add_event_offsets(301);
    r.set_event_epoch(1ULL << 40);
  }
  Write(dir / "plain_command.bin", std::string(1, '\0') + cqrs::testing::Encode({&command, 1}));
  Write(dir / "ok_response.bin", std::string(1, '\0') + cqrs::testing::Encode({&ok, 1}));
  const std::vector<cqrs::v1::Frame> plain = {command, ok, command, ok};
  Write(dir / "plain_mix.bin", std::string(1, '\x30') + cqrs::testing::Encode(plain));
  std::cout << "wrote " << dir << "\n";
  WriteGatewayMessageCorpus(argv[1]);
  return 0;
}
