#include "cqrs/core/event_sink.h"

namespace cqrs {

StagedEvent StagedEvent::From(const v1::EventEnvelope& envelope) {
  std::string bytes;
  if (envelope.offset() == 0 && envelope.epoch() == 0) {
    bytes.reserve(envelope.ByteSizeLong() + kPositionFieldsMaxBytes);
    envelope.AppendToString(&bytes);
  } else {
    v1::EventEnvelope without_position = envelope;
    without_position.clear_offset();
    without_position.clear_epoch();
    bytes.reserve(without_position.ByteSizeLong() + kPositionFieldsMaxBytes);
    without_position.AppendToString(&bytes);
  }
  return StagedEvent(std::move(bytes), envelope.channel());
}

v1::EventEnvelope StagedEvent::Decode() const {
  v1::EventEnvelope envelope;
  // Bytes made by Emit or From always parse; a sink's own bytes are its own affair.
  (void)envelope.ParseFromString(envelope_);
  return envelope;
}

}  // namespace cqrs
