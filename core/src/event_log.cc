#include "cqrs/core/event_log.h"

#include <random>
#include <utility>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/container/inlined_vector.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "cqrs/core/wire_writer.h"
#include "cqrs/v1/gateway.pb.h"

namespace cqrs {
namespace {

std::uint64_t RandomEpoch() {
  std::random_device device;
  std::uint64_t epoch = 0;
  while (epoch == 0) epoch = (static_cast<std::uint64_t>(device()) << 32) | device();
  return epoch;
}

using google::protobuf::io::CodedOutputStream;

// Bytes an event costs the retention budget: its serialized envelope and channel, plus
// bookkeeping.
std::size_t CostOf(const EventRecord& record) {
  return record.envelope().size() + record.channel().size() + 160;
}

bool PayloadTypeIsLinked(const google::protobuf::Any& payload) {
  if (payload.type_url().empty()) return true;  // No payload: nothing to resolve.
  const absl::string_view url = payload.type_url();
  const std::size_t slash = url.rfind('/');
  const absl::string_view name = slash == absl::string_view::npos ? url : url.substr(slash + 1);
  return google::protobuf::DescriptorPool::generated_pool()->FindMessageTypeByName(
             std::string(name)) != nullptr;
}

std::string RenderJson(const EventRecord& record) {
  using google::protobuf::util::MessageToJsonString;
  v1::EventEnvelope event;
  std::string json = "{\"event\":";
  if (!event.ParseFromString(record.envelope())) {
    // Not reachable for records made by this process; keeps the output well-formed anyway.
    absl::StrAppend(&json, "{\"offset\":\"", record.offset(), "\"}}");
    return json;
  }
  std::string body;
  if (PayloadTypeIsLinked(event.payload()) && MessageToJsonString(event, &body).ok()) {
    absl::StrAppend(&json, body, "}");
    return json;
  }
  // The payload's type is not linked into this program: render the rest canonically and the
  // payload as its type URL and base64 bytes, so nothing is lost.
  v1::EventEnvelope without_payload = event;
  without_payload.clear_payload();
  body.clear();
  (void)MessageToJsonString(without_payload, &body);
  body.pop_back();  // The closing brace.
  google::protobuf::Value type_url;
  type_url.set_string_value(event.payload().type_url());
  std::string type_url_json;
  (void)MessageToJsonString(type_url, &type_url_json);  // A JSON string, escaped.
  absl::StrAppend(&json, body, body.size() > 1 ? "," : "", "\"payload\":{\"@type\":", type_url_json,
                  ",\"value\":\"", absl::Base64Escape(event.payload().value()), "\"}}}");
  return json;
}

}  // namespace

EventRecord::EventRecord(std::uint64_t offset, std::string channel, std::string envelope)
    : offset_(offset), channel_(std::move(channel)), envelope_(std::move(envelope)) {
  SetPrefix();
}

EventRecord::EventRecord(Unsealed, std::string channel, std::string envelope)
    : channel_(std::move(channel)), envelope_(std::move(envelope)) {}

void EventRecord::Seal(std::uint64_t offset, std::uint64_t epoch) {
  offset_ = offset;
  // Both fields in one append (into the room Emit reserved). Written even when zero, so that a
  // record always says where it is.
  char fields[StagedEvent::kPositionFieldsMaxBytes];
  wire::Writer out(fields);
  out.Tag(v1::EventEnvelope::kOffsetFieldNumber, wire::kVarint);
  out.RawVarint(offset);
  out.Tag(v1::EventEnvelope::kEpochFieldNumber, wire::kVarint);
  out.RawVarint(epoch);
  envelope_.append(fields, static_cast<std::size_t>(out.position() - fields));
  SetPrefix();
}

void EventRecord::SetPrefix() {
  // ServerMessage.event is field 3, length-delimited.
  auto* bytes = reinterpret_cast<std::uint8_t*>(proto_prefix_.data());
  std::uint8_t* end = CodedOutputStream::WriteVarint32ToArray((3 << 3) | 2, bytes);
  end = CodedOutputStream::WriteVarint64ToArray(envelope_.size(), end);
  proto_prefix_size_ = static_cast<std::uint8_t>(end - bytes);
}

const std::string& EventRecord::server_message_json() const {
  absl::call_once(json_once_, [this] { json_ = RenderJson(*this); });
  return json_;
}

InMemoryEventLog::InMemoryEventLog(InMemoryEventLogOptions options)
    : options_(options), epoch_(options.epoch != 0 ? options.epoch : RandomEpoch()) {}

absl::StatusOr<AppendReceipt> InMemoryEventLog::Append(std::span<StagedEvent* const> events) {
  if (events.empty()) return AppendReceipt{.first_offset = 0, .count = 0, .epoch = epoch_};
  // Everything that allocates happens before the lock: each event's bytes (serialized once, by
  // Emit, with room for offset and epoch) move into its record. Under the lock each record gets
  // its offset, the two fields are appended (protobuf accepts fields in any order; the reserved
  // room means no reallocation), and the records join the window.
  // Inline storage: a command usually appends one event, and this runs for every command.
  absl::InlinedVector<Record, 2> appended;
  absl::InlinedVector<EventRecord*, 2> unsealed;  // The same records, for sealing them.
  appended.reserve(events.size());
  unsealed.reserve(events.size());
  for (StagedEvent* event : events) {
    auto record = std::make_shared<EventRecord>(EventRecord::Unsealed{}, event->TakeChannel(),
                                                event->TakeEnvelope());
    unsealed.push_back(record.get());
    appended.push_back(std::move(record));
  }
  absl::InlinedVector<Record, 2> expired;  // Released after the lock.
  AppendReceipt receipt{.first_offset = 0, .count = events.size(), .epoch = epoch_};
  mutex_.lock();
  receipt.first_offset = head_ + 1;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const std::uint64_t offset = ++head_;
    unsealed[i]->Seal(offset, epoch_);
    const std::size_t cost = CostOf(*unsealed[i]);
    bytes_ += cost;
    records_.push_back({appended[i], cost});
  }
  while (!records_.empty() &&
         (records_.size() > options_.max_events || bytes_ > options_.max_bytes)) {
    // The records that go next went cold long ago: fetch them (and, once a record has arrived,
    // its envelope's bytes) a few evictions ahead, so that their misses overlap with other
    // work instead of stalling the release one after another.
    constexpr std::size_t kPrefetchAhead = 4;
    if (records_.size() > 2 * kPrefetchAhead) {
      // The record and, before it, its shared_ptr control block.
      const char* block = reinterpret_cast<const char*>(records_[2 * kPrefetchAhead].record.get());
      for (std::size_t line = 0; line < sizeof(EventRecord) + 16; line += 64) {
        __builtin_prefetch(block - 16 + line);
      }
      __builtin_prefetch(records_[kPrefetchAhead].record->envelope().data());
    }
    bytes_ -= records_.front().cost;
    expired.push_back(std::move(records_.front().record));
    records_.pop_front();
  }
  // Listeners see appends in offset order: the notification lock is taken before the log's
  // lock is released, and readers are not held up while listeners run.
  notify_mutex_.lock();
  mutex_.unlock();
  for (const Listener& listener : listeners_) listener(appended);
  notify_mutex_.unlock();
  return receipt;
}

absl::StatusOr<std::vector<EventLog::Record>> InMemoryEventLog::Read(std::uint64_t after,
                                                                     std::size_t max) const {
  std::lock_guard lock(mutex_);
  if (after > head_) {
    return absl::InvalidArgumentError(
        absl::StrCat("offset ", after, " is beyond the head ", head_, " of epoch ", epoch_));
  }
  const std::uint64_t earliest = records_.empty() ? head_ + 1 : records_.front().record->offset();
  if (after + 1 < earliest) {
    return absl::OutOfRangeError(absl::StrCat("events after offset ", after,
                                              " are no longer retained: the earliest is ", earliest,
                                              " in epoch ", epoch_));
  }
  std::vector<Record> out;
  if (records_.empty()) return out;
  // Offsets are contiguous: the record after `after` sits at a computable index.
  std::size_t index = static_cast<std::size_t>(after + 1 - earliest);
  for (; index < records_.size() && out.size() < max; ++index) {
    out.push_back(records_[index].record);
  }
  return out;
}

std::uint64_t InMemoryEventLog::head() const {
  std::lock_guard lock(mutex_);
  return head_;
}

std::uint64_t InMemoryEventLog::earliest() const {
  std::lock_guard lock(mutex_);
  return records_.empty() ? head_ + 1 : records_.front().record->offset();
}

void InMemoryEventLog::AddListener(Listener listener) { listeners_.push_back(std::move(listener)); }

std::size_t InMemoryEventLog::retained_events() const {
  std::lock_guard lock(mutex_);
  return records_.size();
}

std::size_t InMemoryEventLog::retained_bytes() const {
  std::lock_guard lock(mutex_);
  return bytes_;
}

}  // namespace cqrs
