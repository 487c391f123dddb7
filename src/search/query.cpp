// Query expressions and their embedding.
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "clipkit/index.h"
#include "clipkit/model.h"
#include "clipkit/zeroshot.h"
#include "core/mapped_file.h"

namespace clipkit {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Parses an optional "NUMBER *" at s[i]; on success sets *w and returns the index after '*'.
bool parse_weight(const std::string& s, size_t i, float* w, size_t* after) {
  size_t j = i;
  const size_t start = j;
  bool digits = false;
  while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j, digits = true;
  if (j < s.size() && s[j] == '.') {
    ++j;
    while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j, digits = true;
  }
  if (!digits) return false;
  if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
    size_t k = j + 1;
    if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
    if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
      while (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) ++k;
      j = k;
    }
  }
  const std::string num = s.substr(start, j - start);
  while (j < s.size() && is_space(s[j])) ++j;
  if (j >= s.size() || s[j] != '*') return false;
  ++j;
  while (j < s.size() && is_space(s[j])) ++j;
  *w = std::strtof(num.c_str(), nullptr);  // out of range: ±inf, refused as "not finite" by the caller
  *after = j;
  return true;
}

// Matches "text:" / "image:" / "like:" at s[i].
bool parse_kind(const std::string& s, size_t i, QueryTerm::Kind* kind, size_t* after) {
  static const struct {
    const char* name;
    QueryTerm::Kind kind;
  } kinds[] = {{"text:", QueryTerm::Kind::Text}, {"image:", QueryTerm::Kind::Image}, {"like:", QueryTerm::Kind::Item}};
  for (const auto& k : kinds) {
    const size_t n = std::strlen(k.name);
    if (s.compare(i, n, k.name) == 0) {
      *kind = k.kind;
      *after = i + n;
      return true;
    }
  }
  return false;
}

// Does a new term start at s[i] (which is whitespace): \s+ [+-] \s* (weight \*)? kind:
bool term_starts(const std::string& s, size_t i) {
  size_t j = i;
  while (j < s.size() && is_space(s[j])) ++j;
  if (j == i || j >= s.size() || (s[j] != '+' && s[j] != '-')) return false;
  ++j;
  while (j < s.size() && is_space(s[j])) ++j;
  float w;
  size_t after;
  if (parse_weight(s, j, &w, &after)) j = after;
  QueryTerm::Kind k;
  return parse_kind(s, j, &k, &after);
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

}  // namespace

Query parse_query(const std::string& expr) {
  Query q;
  const std::string& s = expr;
  size_t i = 0;
  auto fail = [&](const std::string& why) {
    throw Error(ErrorCode::InvalidArgument, "query '" + expr + "': " + why + " at position " + std::to_string(i + 1));
  };
  while (true) {
    while (i < s.size() && is_space(s[i])) ++i;
    if (i >= s.size()) break;
    float sign = 1.0f;
    if (s[i] == '+' || s[i] == '-') {
      sign = s[i] == '-' ? -1.0f : 1.0f;
      ++i;
      while (i < s.size() && is_space(s[i])) ++i;
    } else if (!q.terms.empty()) {
      fail("expected '+' or '-' between terms");
    }
    float w = 1.0f;
    size_t after = 0;
    if (parse_weight(s, i, &w, &after)) i = after;
    QueryTerm t;
    if (!parse_kind(s, i, &t.kind, &after)) fail("expected text:, image: or like:");
    i = after;
    if (i < s.size() && s[i] == '"') {
      ++i;
      std::string v;
      bool closed = false;
      while (i < s.size()) {
        if (s[i] == '\\' && i + 1 < s.size()) {
          v += s[i + 1];
          i += 2;
          continue;
        }
        if (s[i] == '"') {
          closed = true;
          ++i;
          break;
        }
        v += s[i++];
      }
      if (!closed) fail("unterminated quote");
      t.value = v;
      while (i < s.size() && is_space(s[i])) ++i;
      if (i < s.size() && s[i] != '+' && s[i] != '-') fail("unexpected text after a quoted value");
    } else {
      const size_t start = i;
      while (i < s.size() && !(is_space(s[i]) && term_starts(s, i))) ++i;
      t.value = trim(s.substr(start, i - start));
    }
    if (t.value.empty()) fail("empty value");
    if (!std::isfinite(w)) fail("weight is not finite");
    t.weight = sign * w;
    q.terms.push_back(std::move(t));
  }
  if (q.terms.empty()) throw Error(ErrorCode::InvalidArgument, "query '" + expr + "' has no terms");
  return q;
}

std::vector<float> Index::embed_query(const Query& query, const Model* model) const {
  const int dim = this->dim();
  if (query.terms.empty()) throw Error(ErrorCode::InvalidArgument, "empty query");
  std::vector<double> acc(static_cast<size_t>(dim), 0.0);
  auto accumulate = [&](const float* v, float w, const std::string& what) {
    double n2 = 0;
    for (int i = 0; i < dim; ++i) n2 += static_cast<double>(v[i]) * v[i];
    if (!(n2 > 0) || !std::isfinite(n2)) throw Error(ErrorCode::InvalidArgument, "query term " + what + " has a zero or invalid embedding");
    const double s = w / std::sqrt(n2);
    for (int i = 0; i < dim; ++i) acc[static_cast<size_t>(i)] += s * v[i];
  };
  auto need_model = [&](const std::string& what) -> const Model& {
    if (!model) throw Error(ErrorCode::InvalidArgument, "query term " + what + " needs a model");
    check_model(*model);
    return *model;
  };
  for (const auto& t : query.terms) {
    switch (t.kind) {
      case QueryTerm::Kind::Text: {
        const std::string what = "text:'" + t.value + "'";
        const Model& m = need_model(what);
        if (query.templates.empty()) {
          Embeddings e = m.encode_texts({t.value}, true);
          if (e.rows != 1 || e.dim != dim) throw Error(ErrorCode::Shape, "model returned a wrong-sized text embedding for " + what);
          accumulate(e.row(0), t.weight, what);
        } else {
          std::vector<std::string> prompts;
          for (const auto& tmpl : query.templates) prompts.push_back(fill_template(tmpl, t.value));
          Embeddings e = m.encode_texts(prompts, true);
          if (e.rows != static_cast<int64_t>(prompts.size()) || e.dim != dim)
            throw Error(ErrorCode::Shape, "model returned wrong-sized text embeddings for " + what);
          std::vector<float> mean(static_cast<size_t>(dim), 0.0f);
          for (int64_t r = 0; r < e.rows; ++r) {
            const float* row = e.row(r);
            double n2 = 0;
            for (int i = 0; i < dim; ++i) n2 += static_cast<double>(row[i]) * row[i];
            const double inv = n2 > 0 ? 1.0 / std::sqrt(n2) : 0.0;
            for (int i = 0; i < dim; ++i) mean[static_cast<size_t>(i)] += static_cast<float>(row[i] * inv);
          }
          for (auto& x : mean) x /= static_cast<float>(e.rows);
          accumulate(mean.data(), t.weight, what);
        }
        break;
      }
      case QueryTerm::Kind::Image: {
        const std::string what = "image:" + t.value;
        const Model& m = need_model(what);
        const std::string data = read_file(t.value);
        Image img = decode_image_memory(reinterpret_cast<const uint8_t*>(data.data()), data.size(), t.value);
        const PreprocessConfig& pc = m.preprocess_config();
        std::vector<float> px = preprocess(img, pc);
        Embeddings e = m.encode_images(px.data(), 1, true);
        if (e.rows != 1 || e.dim != dim) throw Error(ErrorCode::Shape, "model returned a wrong-sized image embedding for " + what);
        accumulate(e.row(0), t.weight, what);
        break;
      }
      case QueryTerm::Kind::Item: {
        CatalogItem it;
        std::string v = t.value;
        if (!v.empty() && v[0] == '#') v = v.substr(1);
        bool found = find_path(t.value, &it);
        if (!found && !v.empty() && v.size() < 19 && std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); }))
          found = find_id(std::stoll(v), &it);
        if (!found) throw Error(ErrorCode::NotFound, "'" + t.value + "' is neither an indexed path nor an item id of " + dir());
        const std::vector<float> vec = vector(it.id);
        accumulate(vec.data(), t.weight, "like:" + t.value);
        break;
      }
      case QueryTerm::Kind::Vector: {
        if (static_cast<int>(t.vector.size()) != dim)
          throw Error(ErrorCode::Shape, "query vector has " + std::to_string(t.vector.size()) + " values, index dim is " + std::to_string(dim));
        accumulate(t.vector.data(), t.weight, "vector");
        break;
      }
    }
  }
  double n2 = 0;
  for (double x : acc) n2 += x * x;
  if (!(n2 > 1e-12)) throw Error(ErrorCode::InvalidArgument, "the query terms cancel out (zero vector)");
  std::vector<float> out(static_cast<size_t>(dim));
  const double inv = 1.0 / std::sqrt(n2);
  for (int i = 0; i < dim; ++i) out[static_cast<size_t>(i)] = static_cast<float>(acc[static_cast<size_t>(i)] * inv);
  return out;
}

}  // namespace clipkit
