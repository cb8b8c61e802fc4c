// Micro-benchmarks of the frame codec: encode a batch, decode a batch.
//   build/release/tests/bench/cqrs_codec_microbench

#include <benchmark/benchmark.h>

#include "cqrs/net/frame_codec.h"
#include "testing/frames.h"

namespace {

std::vector<cqrs::v1::Frame> Batch(std::size_t n) {
  const auto kinds = cqrs::testing::OneFrameOfEachKind();
  std::vector<cqrs::v1::Frame> frames(n, kinds[2]);  // Command frames.
  return frames;
}

void BM_EncodeBatch(benchmark::State& state) {
  const auto frames = Batch(static_cast<std::size_t>(state.range(0)));
  cqrs::net::FrameEncoder encoder;
  for (auto _ : state) {
    encoder.Clear();
    for (const auto& f : frames) benchmark::DoNotOptimize(encoder.Append(f));
    benchmark::DoNotOptimize(encoder.data().data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_EncodeBatch)->Arg(1)->Arg(64);

void BM_DecodeBatch(benchmark::State& state) {
  const std::string bytes = cqrs::testing::Encode(Batch(static_cast<std::size_t>(state.range(0))));
  cqrs::net::FrameDecoder decoder;
  cqrs::v1::Frame frame;
  for (auto _ : state) {
    decoder.Feed(cqrs::testing::AsBytes(bytes));
    while (decoder.Next(frame) == cqrs::net::DecodeResult::kFrame) {
    }
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_DecodeBatch)->Arg(1)->Arg(64);

}  // namespace

BENCHMARK_MAIN();
