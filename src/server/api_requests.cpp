// Request bodies of the recommendation and write routes (api_requests.h).
#include "server/api_requests.h"

#include <cmath>
#include <limits>

#include "clipkit/error.h"
#include "search/metadata.h"
#include "server/http_util.h"

namespace clipkit::server {

namespace {

constexpr int kMaxDepth = 16;

int64_t item_id(const json& v, const std::string& key) {
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<int64_t>();
  throw HttpError(400, "\"" + key + "\" must hold item ids (non-negative integers)");
}

Example example(const json& v, const std::string& key, int dim) {
  Example e;
  if (v.is_number_integer()) {
    e.term.kind = QueryTerm::Kind::Item;
    e.term.value = "#" + std::to_string(item_id(v, key));
    return e;
  }
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s.empty()) throw HttpError(400, "an example in \"" + key + "\" is an empty string");
    if (s.rfind("text:", 0) == 0) {
      if (s.size() == 5) throw HttpError(400, "an example in \"" + key + "\" has an empty text");
      e.term.kind = QueryTerm::Kind::Text;
      e.term.value = s.substr(5);
    } else if (s.rfind("image:", 0) == 0) {
      throw HttpError(400, "image: examples name files on the server; send {\"image\": \"<base64>\"} instead");
    } else {
      e.term.kind = QueryTerm::Kind::Item;
      e.term.value = s;
    }
    return e;
  }
  if (v.is_object() && v.size() == 1) {
    const auto first = v.begin();
    const std::string k = first.key();
    const json& x = first.value();
    if (k == "text" && x.is_string() && !x.get<std::string>().empty()) {
      e.term.kind = QueryTerm::Kind::Text;
      e.term.value = x.get<std::string>();
      return e;
    }
    if (k == "vector" && x.is_array()) {
      if (static_cast<int>(x.size()) != dim)
        throw HttpError(400, "a vector example has " + std::to_string(x.size()) + " values, the index dim is " + std::to_string(dim));
      e.term.kind = QueryTerm::Kind::Vector;
      e.term.value = "vector";
      for (const auto& n : x) {
        if (!n.is_number() || !std::isfinite(n.get<double>()) || std::fabs(n.get<double>()) > std::numeric_limits<float>::max())
          throw HttpError(400, "a vector example holds a value that is not a finite number");
        e.term.vector.push_back(static_cast<float>(n.get<double>()));
      }
      return e;
    }
    if (k == "image" && x.is_string()) {
      e.is_image = true;
      e.image_bytes = base64_decode(x.get<std::string>(), "an image example");
      if (e.image_bytes.empty()) throw HttpError(400, "an image example is empty");
      return e;
    }
  }
  throw HttpError(400, "an example in \"" + key +
                           "\" must be an item id, a path, \"#ID\", \"text:TEXT\", {\"vector\": [...]}, {\"text\": \"...\"} or "
                           "{\"image\": \"<base64>\"}");
}

std::vector<std::string> strings(const json& v, const std::string& key) {
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) throw HttpError(400, "\"" + key + "\" must be a string or an array of strings");
  std::vector<std::string> out;
  for (const auto& x : v) {
    if (!x.is_string() || x.get<std::string>().empty()) throw HttpError(400, "\"" + key + "\" must hold non-empty strings");
    out.push_back(x.get<std::string>());
  }
  return out;
}

}  // namespace

json parse_json_object(const std::string& body, size_t max_bytes) {
  if (body.size() > max_bytes) throw HttpError(413, "the JSON body is larger than " + std::to_string(max_bytes) + " bytes");
  json j;
  try {
    j = json::parse(body, [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxDepth) throw HttpError(400, "the JSON body is nested deeper than " + std::to_string(kMaxDepth) + " levels");
      return true;
    });
  } catch (const json::exception& e) {
    throw HttpError(400, std::string("malformed JSON: ") + e.what());
  }
  if (!j.is_object()) throw HttpError(400, "the request body must be a JSON object");
  return j;
}

std::string base64_decode(const std::string& text, const std::string& what) {
  static const std::string chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  bool padding = false;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      padding = true;
      continue;
    }
    const size_t v = chars.find(c);
    if (v == std::string::npos || padding) throw HttpError(400, what + " is not valid base64");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (bits >= 6) throw HttpError(400, what + " is not valid base64 (truncated)");
  return out;
}

std::string where_of(const json& v) {
  try {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object()) return where_from_json(v.dump());
  } catch (const Error& e) {
    throw HttpError(400, e.what());
  }
  throw HttpError(400, "\"where\" must be a filter string or its JSON form (an object)");
}

RecommendBody parse_recommend_body(const json& j, int max_k, int dim) {
  RecommendBody r;
  r.options.search.k = std::min(20, max_k);
  for (const auto& [key, v] : j.items()) {
    if (key == "positive" || key == "negative") {
      auto& list = key == "positive" ? r.positive : r.negative;
      if (!v.is_array()) throw HttpError(400, "\"" + key + "\" must be an array of examples");
      for (const auto& x : v) list.push_back(example(x, key, dim));
    } else if (key == "strategy") {
      if (!v.is_string()) throw HttpError(400, "\"strategy\" must be \"average\" or \"best-score\"");
      try {
        r.options.strategy = parse_strategy(v.get<std::string>());
      } catch (const Error& e) {
        throw HttpError(400, e.what());
      }
    } else if (key == "diversity") {
      if (!v.is_number() || !(v.get<double>() >= 0 && v.get<double>() <= 1)) throw HttpError(400, "\"diversity\" must be a number in [0, 1]");
      r.options.diversity = static_cast<float>(v.get<double>());
    } else if (key == "exclude") {
      if (!v.is_array()) throw HttpError(400, "\"exclude\" must be an array of item ids");
      for (const auto& x : v) r.options.search.exclude_ids.push_back(item_id(x, key));
    } else if (key == "where") {
      r.options.search.where = where_of(v);
    } else if (key == "tags" || key == "tag") {
      for (auto& t : strings(v, key)) r.options.search.filter.tags.push_back(std::move(t));
    } else if (key == "path_prefix") {
      if (!v.is_string()) throw HttpError(400, "\"path_prefix\" must be a string");
      r.options.search.filter.path_prefix = v.get<std::string>();
    } else if (key == "k") {
      if (!v.is_number_integer() || v.get<int64_t>() <= 0) throw HttpError(400, "\"k\" must be a positive integer");
      r.options.search.k = static_cast<int>(std::min<int64_t>(v.get<int64_t>(), max_k));
    } else if (key == "offset") {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > max_k)
        throw HttpError(400, "\"offset\" must be an integer in 0.." + std::to_string(max_k));
      r.offset = static_cast<int>(v.get<int64_t>());
    } else if (key == "min_score") {
      if (!v.is_null()) {
        if (!v.is_number() || !std::isfinite(v.get<double>())) throw HttpError(400, "\"min_score\" must be a finite number");
        r.options.search.min_score = static_cast<float>(v.get<double>());
      }
    } else {
      throw HttpError(400, "unknown field \"" + key +
                               "\" (known: positive, negative, strategy, diversity, exclude, where, tags, path_prefix, k, offset, min_score)");
    }
  }
  if (r.positive.empty() && r.negative.empty()) throw HttpError(400, "give at least one \"positive\" or \"negative\" example");
  return r;
}

ItemBody parse_item_body(const json& j) {
  ItemBody b;
  for (const auto& [key, v] : j.items()) {
    if (key == "path") {
      if (!v.is_string() || v.get<std::string>().empty()) throw HttpError(400, "\"path\" must be a non-empty string");
      b.path = v.get<std::string>();
    } else if (key == "image") {
      if (!v.is_string()) throw HttpError(400, "\"image\" must be the image bytes in base64");
      b.image_bytes = base64_decode(v.get<std::string>(), "\"image\"");
      if (b.image_bytes.empty()) throw HttpError(400, "\"image\" is empty");
    } else if (key == "name") {
      if (!v.is_string()) throw HttpError(400, "\"name\" must be a string");
      b.name = v.get<std::string>();
    } else if (key == "meta") {
      try {
        search::check_meta_object(v, "\"meta\"");
      } catch (const Error& e) {
        throw HttpError(status_for(e.code()), e.what());
      }
      b.meta = v.dump();
    } else if (key == "tags" || key == "tag") {
      b.tags = strings(v, key);
    } else {
      throw HttpError(400, "unknown field \"" + key + "\" (known: path, image, name, meta, tags)");
    }
  }
  if (b.path.empty() == b.image_bytes.empty()) throw HttpError(400, "give either \"path\" (a file under an allowed root) or \"image\" (base64 bytes)");
  return b;
}

}  // namespace clipkit::server
