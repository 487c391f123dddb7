// libFuzzer target: arbitrary bytes through the whole tokenizer.
//   encode (with and without normalize), tokenize (truncating and not), decode of the ids and of
//   raw ids taken from the input. Invalid UTF-8 is replaced by U+FFFD; nothing may crash.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& tok = clipkit::Tokenizer::instance();
  const std::string text(reinterpret_cast<const char*>(data), size);

  const std::vector<int32_t> plain = tok.encode(text, false);
  const std::vector<int32_t> fixed = tok.encode(text, true);
  for (int32_t id : plain)
    if (id < 0 || id >= clipkit::Tokenizer::kVocabSize) __builtin_trap();
  (void)tok.decode(plain);
  (void)tok.decode(fixed);
  (void)clipkit::normalize_text(text);

  const int ctx = 1 + static_cast<int>(size % 80);
  const auto rows = tok.tokenize({text}, ctx, true, false);
  if (rows.size() != 1 || rows[0].size() != static_cast<size_t>(ctx)) __builtin_trap();
  if (plain.size() + 2 <= static_cast<size_t>(ctx) && rows[0][plain.size() + 1] != clipkit::Tokenizer::kEndOfText)
    __builtin_trap();
  try {
    (void)tok.tokenize({text}, ctx, false, true);
  } catch (const clipkit::Error&) {
  }

  // Raw ids (possibly out of range) must either decode or throw clipkit::Error.
  std::vector<int32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  for (auto& id : ids) id = static_cast<int32_t>(static_cast<uint32_t>(id) % 49500u);
  try {
    (void)tok.decode(ids);
  } catch (const clipkit::Error&) {
  }
  return 0;
}
