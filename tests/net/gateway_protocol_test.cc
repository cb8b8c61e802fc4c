#include "cqrs/net/gateway_protocol.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <span>
#include <string>

namespace cqrs::net {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

constexpr absl::string_view kNoOneof = "the message sets none of subscribe, unsubscribe, ping";

void ExpectChosen(absl::string_view header, WireFormat format, absl::string_view echo) {
  const absl::StatusOr<Subprotocol> chosen = ChooseSubprotocol(header);
  ASSERT_TRUE(chosen.ok()) << header << ": " << chosen.status();
  EXPECT_EQ(chosen->format, format) << header;
  EXPECT_EQ(chosen->header, echo) << header;
}

TEST(ChooseSubprotocol, NoHeaderMeansJsonAndNothingToEcho) {
  ExpectChosen("", WireFormat::kJson, "");
  ExpectChosen(" ", WireFormat::kJson, "");
  ExpectChosen(" , ,", WireFormat::kJson, "");
}

TEST(ChooseSubprotocol, FirstOfOursInTheClientsOrder) {
  ExpectChosen("cqrs.v1.json", WireFormat::kJson, kJsonSubprotocol);
  ExpectChosen("cqrs.v1.proto", WireFormat::kProto, kProtoSubprotocol);
  ExpectChosen("cqrs.v1.proto, cqrs.v1.json", WireFormat::kProto, kProtoSubprotocol);
  ExpectChosen("cqrs.v1.json,cqrs.v1.proto", WireFormat::kJson, kJsonSubprotocol);
  ExpectChosen("mqtt, \tcqrs.v1.proto ,graphql-ws", WireFormat::kProto, kProtoSubprotocol);
  ExpectChosen("cqrs.v2.json, cqrs.v1.json", WireFormat::kJson, kJsonSubprotocol);
}

TEST(ChooseSubprotocol, OnlyUnknownProtocolsAreRefused) {
  const absl::StatusOr<Subprotocol> chosen = ChooseSubprotocol("mqtt, graphql-ws");
  ASSERT_EQ(chosen.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(chosen.status().message(),
            "Sec-WebSocket-Protocol \"mqtt, graphql-ws\" names no supported subprotocol; "
            "supported: cqrs.v1.json, cqrs.v1.proto");
  // Names compare case-sensitively, and are not prefixes.
  EXPECT_FALSE(ChooseSubprotocol("CQRS.V1.JSON").ok());
  EXPECT_FALSE(ChooseSubprotocol("cqrs.v1.json2").ok());
  EXPECT_FALSE(ChooseSubprotocol("cqrs.v1.json;q=1").ok());
  // A huge header is quoted only in part.
  const absl::StatusOr<Subprotocol> long_one = ChooseSubprotocol(std::string(10'000, 'x'));
  EXPECT_LT(long_one.status().message().size(), 400u);
}

TEST(WireFormat, NamesAndOpcodes) {
  EXPECT_EQ(SubprotocolName(WireFormat::kJson), "cqrs.v1.json");
  EXPECT_EQ(SubprotocolName(WireFormat::kProto), "cqrs.v1.proto");
  EXPECT_EQ(MessageOpcode(WireFormat::kJson), ws::Opcode::kText);
  EXPECT_EQ(MessageOpcode(WireFormat::kProto), ws::Opcode::kBinary);
}

TEST(DecodeClientMessage, JsonSubscribeWithChannelsAndOffset) {
  v1::ClientMessage message;
  ASSERT_TRUE(DecodeClientMessage(WireFormat::kJson,
                                  R"({"subscribe": {"subscriptionId": "s-1",
                                      "channels": ["users", "orders.*"],
                                      "fromOffset": "42", "epoch": "7"}})",
                                  message)
                  .ok());
  ASSERT_TRUE(message.has_subscribe());
  EXPECT_EQ(message.subscribe().subscription_id(), "s-1");
  EXPECT_THAT(message.subscribe().channels(), ::testing::ElementsAre("users", "orders.*"));
  ASSERT_TRUE(message.subscribe().has_from_offset());
  EXPECT_EQ(message.subscribe().from_offset(), 42u);
  EXPECT_EQ(message.subscribe().epoch(), 7u);
}

TEST(DecodeClientMessage, JsonAcceptsNumbersForUint64AndProtoFieldNames) {
  v1::ClientMessage message;
  ASSERT_TRUE(DecodeClientMessage(
                  WireFormat::kJson,
                  R"({"subscribe":{"subscription_id":"a","from_offset":18446744073709551615}})",
                  message)
                  .ok());
  EXPECT_EQ(message.subscribe().subscription_id(), "a");
  EXPECT_EQ(message.subscribe().from_offset(), 18446744073709551615u);

  ASSERT_TRUE(
      DecodeClientMessage(WireFormat::kJson, R"({"subscribe":{"fromOffset":0}})", message).ok());
  EXPECT_TRUE(message.subscribe().has_from_offset());  // Explicit presence: 0 is not unset.
  ASSERT_TRUE(DecodeClientMessage(WireFormat::kJson, R"({"subscribe":{}})", message).ok());
  EXPECT_FALSE(message.subscribe().has_from_offset());

  ASSERT_TRUE(DecodeClientMessage(WireFormat::kJson, R"({"ping":{"nonce":"9"}})", message).ok());
  EXPECT_EQ(message.ping().nonce(), 9u);
  ASSERT_TRUE(
      DecodeClientMessage(WireFormat::kJson, R"({"unsubscribe":{"subscriptionId":"s-1"}})", message)
          .ok());
  EXPECT_EQ(message.unsubscribe().subscription_id(), "s-1");
}

TEST(DecodeClientMessage, EmptyMessageNamesTheOneof) {
  v1::ClientMessage message;
  for (const WireFormat format : {WireFormat::kJson, WireFormat::kProto}) {
    const absl::Status status =
        DecodeClientMessage(format, format == WireFormat::kJson ? "{}" : "", message);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr(kNoOneof));
  }
}

TEST(DecodeClientMessage, JsonErrors) {
  v1::ClientMessage message;
  const auto error = [&](absl::string_view json) {
    const absl::Status status = DecodeClientMessage(WireFormat::kJson, json, message);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << json;
    return std::string(status.message());
  };
  EXPECT_THAT(error(R"({"subscribe":{},"extra":1})"), HasSubstr("extra"));
  EXPECT_THAT(error(R"({"subscribe":{"channel":"users"}})"), HasSubstr("channel"));
  EXPECT_THAT(error("not json"), HasSubstr("invalid cqrs.v1.ClientMessage JSON"));
  EXPECT_THAT(error(R"({"ping":{"nonce":"-1"}})"), HasSubstr("nonce"));
  EXPECT_THAT(error(R"({"subscribe":{"fromOffset":"forty-two"}})"), HasSubstr("from_offset"));
  error("");
  error("{");
  error("[1, 2]");
  error("null");
  error(R"({"subscribe":{}} trailing)");
  error(R"({"subscribe":{"channels":[1]}})");
  EXPECT_FALSE(message.has_subscribe());  // Left empty after an error.
}

TEST(DecodeClientMessage, JsonWithTwoKindsIsRefused) {
  v1::ClientMessage message;
  const absl::Status status =
      DecodeClientMessage(WireFormat::kJson, R"({"subscribe":{},"ping":{}})", message);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << message.ShortDebugString();
}

TEST(DecodeClientMessage, ProtoRoundTrip) {
  v1::ClientMessage sent;
  v1::Subscribe& subscribe = *sent.mutable_subscribe();
  subscribe.set_subscription_id("s-9");
  subscribe.add_channels("*");
  subscribe.set_from_offset(0);
  subscribe.set_epoch(3);
  v1::ClientMessage received;
  received.mutable_ping()->set_nonce(1);  // Replaced, not merged.
  ASSERT_TRUE(DecodeClientMessage(WireFormat::kProto, sent.SerializeAsString(), received).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(sent, received)) << received.ShortDebugString();
}

TEST(DecodeClientMessage, ProtoErrors) {
  v1::ClientMessage message;
  const absl::Status garbage = DecodeClientMessage(WireFormat::kProto, "\xff\xff\xff", message);
  EXPECT_EQ(garbage.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(garbage.message(), HasSubstr("3 bytes are not a valid protobuf"));

  v1::ClientMessage bad_utf8;
  bad_utf8.mutable_subscribe()->set_subscription_id("\xc3\x28");
  EXPECT_EQ(DecodeClientMessage(WireFormat::kProto, bad_utf8.SerializeAsString(), message).code(),
            absl::StatusCode::kInvalidArgument);

  // Unknown fields alone do not make a message: the oneof is still empty.
  EXPECT_THAT(DecodeClientMessage(WireFormat::kProto, "\xa0\x06\x01", message).message(),
              HasSubstr(kNoOneof));
}

TEST(EncodeServerMessage, CompactJsonWithCamelCaseNames) {
  v1::ServerMessage message;
  v1::Subscribed& subscribed = *message.mutable_subscribed();
  subscribed.set_subscription_id("s-1");
  subscribed.set_head_offset(42);
  const absl::StatusOr<std::string> json = EncodeServerMessage(WireFormat::kJson, message);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(*json, R"({"subscribed":{"subscriptionId":"s-1","headOffset":"42"}})");

  const absl::StatusOr<std::string> proto = EncodeServerMessage(WireFormat::kProto, message);
  ASSERT_TRUE(proto.ok());
  v1::ServerMessage parsed;
  ASSERT_TRUE(parsed.ParseFromString(*proto));
  EXPECT_TRUE(MessageDifferencer::Equals(parsed, message));
}

TEST(EncodeServerMessage, JsonExpandsAnEventPayloadOfALinkedType) {
  v1::ServerMessage message;
  v1::EventEnvelope& event = *message.mutable_event();
  event.set_offset(5);
  event.set_channel("users");
  v1::Unsubscribe payload;  // Any message type linked into the program will do.
  payload.set_subscription_id("x");
  event.mutable_payload()->PackFrom(payload);
  const absl::StatusOr<std::string> json = EncodeServerMessage(WireFormat::kJson, message);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(*json, R"({"event":{"payload":{"@type":"type.googleapis.com/cqrs.v1.Unsubscribe",)"
                   R"("subscriptionId":"x"},"offset":"5","channel":"users"}})");
}

TEST(EncodeServerMessage, JsonFailsForAnUnknownPayloadType) {
  v1::ServerMessage message;
  message.mutable_event()->mutable_payload()->set_type_url(
      "type.googleapis.com/not.linked.Anywhere");
  message.mutable_event()->mutable_payload()->set_value("\x08\x01");
  const absl::StatusOr<std::string> json = EncodeServerMessage(WireFormat::kJson, message);
  EXPECT_EQ(json.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(json.status().message(), HasSubstr("not.linked.Anywhere"));
  // The binary format needs no type information.
  EXPECT_TRUE(EncodeServerMessage(WireFormat::kProto, message).ok());
}

// The committed fuzz seed corpus stays meaningful as the schema evolves: its streams decode as
// their names say, and together they carry every ClientMessage kind in both formats.
TEST(GatewayMessageCorpus, SeedsDecodeAndCoverEveryKindInBothFormats) {
  const std::filesystem::path dir = std::filesystem::path(CQRS_FUZZ_CORPUS_DIR) / "gateway_message";
  std::set<std::pair<WireFormat, int>> kinds;
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    // regression_* files are inputs that once crashed the fuzzer: arbitrary bytes by design.
    if (name.starts_with("regression_")) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_FALSE(bytes.empty()) << name;
    // The control byte, see fuzz/gateway_message_fuzz.cc.
    const auto control = static_cast<unsigned char>(bytes[0]);
    const WireFormat format = (control & 1) != 0 ? WireFormat::kProto : WireFormat::kJson;
    const std::size_t limits[] = {4096, 125, 1000, 65536};
    ws::Decoder decoder(
        {.max_message_bytes = limits[(control >> 4) & 3], .require_mask = (control & 0x40) == 0});
    std::span<char> input(bytes.data() + 1 + ((control >> 1) & 7),
                          bytes.size() - 1 - ((control >> 1) & 7));
    for (ws::Decoder::Event event;
         (event = decoder.Next(input)) != ws::Decoder::Event::kNeedMore;) {
      if (event == ws::Decoder::Event::kError) break;
      if (event != ws::Decoder::Event::kMessage || name.find("refused") != std::string::npos) {
        continue;
      }
      v1::ClientMessage message;
      const absl::Status status = DecodeClientMessage(format, decoder.message(), message);
      EXPECT_TRUE(status.ok()) << name << ": " << status;
      kinds.emplace(format, message.kind_case());
    }
    EXPECT_EQ(decoder.failed(), name.starts_with("bad_")) << name << ": " << decoder.error();
    ++files;
  }
  EXPECT_GT(files, 0);
  const int kind_count = v1::ClientMessage::descriptor()->FindOneofByName("kind")->field_count();
  EXPECT_EQ(kinds.size(), 2u * static_cast<std::size_t>(kind_count));
}

}  // namespace
}  // namespace cqrs::net
