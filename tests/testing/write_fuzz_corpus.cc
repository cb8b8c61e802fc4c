// Writes the seed corpus of the frame decoder fuzzer: one file per frame kind, one with every
// kind back to back, and a few with split patterns and bad frames.
//
//   build/dev/tests/cqrs_write_fuzz_corpus fuzz/corpus
//
// File format: see fuzz/frame_decoder_fuzz.cc (control byte, chunk lengths, stream).

#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "testing/frames.h"

namespace {

void Write(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
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
  std::cout << "wrote " << dir << "\n";
  return 0;
}
