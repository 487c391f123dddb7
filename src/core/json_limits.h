// JSON from files the user did not write (config.json, open_clip_config.json, safetensors
// headers, label and template files, classifier metadata) is parsed through this: nesting deeper
// than kMaxJsonDepth levels is an Error(Format) naming the source, before the nested values are
// built. Syntax errors still surface as nlohmann::json::exception, which each caller words.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "clipkit/error.h"

namespace clipkit {

// The deepest nesting accepted (CLIP configs, safetensors headers and label files use 2 to 5).
inline constexpr int kMaxJsonDepth = 64;

template <typename Text>
nlohmann::json parse_json_bounded(const Text& text, const std::string& source) {
  const nlohmann::json::parser_callback_t limit = [&source](int depth, nlohmann::json::parse_event_t event,
                                                            nlohmann::json&) {
    if ((event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth)
      throw Error(ErrorCode::Format, source + ": JSON nested more than " + std::to_string(kMaxJsonDepth) +
                                         " levels deep");
    return true;
  };
  return nlohmann::json::parse(text, limit);
}

// The same over [begin, end).
inline nlohmann::json parse_json_bounded(const char* begin, const char* end, const std::string& source) {
  return parse_json_bounded(std::string_view(begin, static_cast<size_t>(end - begin)), source);
}

}  // namespace clipkit
