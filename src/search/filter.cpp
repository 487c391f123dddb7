// The `where` filter language: tokenizer, recursive-descent parser and evaluator (filter.h).
#include "search/filter.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <functional>

#include "clipkit/error.h"

namespace clipkit::search {

namespace {

constexpr int kMaxDepth = 64;

struct Token {
  enum Kind { End, Ident, String, Number, Op, LParen, RParen, LBracket, RBracket, Comma } kind = End;
  std::string text;   // identifier / operator / decoded string
  double number = 0;
  size_t column = 0;  // 1-based
};

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) { next(); }

  std::unique_ptr<WhereNode> parse() {
    if (tok_.kind == Token::End) fail("the expression is empty");
    auto n = parse_or(0);
    if (tok_.kind != Token::End) fail("unexpected " + describe(tok_));
    return n;
  }

 private:
  [[noreturn]] void fail(const std::string& what, size_t column = 0) const {
    throw Error(ErrorCode::InvalidArgument, "where: " + what + " at column " + std::to_string(column ? column : tok_.column));
  }

  static std::string describe(const Token& t) {
    switch (t.kind) {
      case Token::End: return "end of expression";
      case Token::String: return "string \"" + t.text + "\"";
      case Token::Number: return "number " + t.text;
      default: return "'" + t.text + "'";
    }
  }

  bool is_keyword(const char* k) const { return tok_.kind == Token::Ident && lower(tok_.text) == k; }

  void next() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
    tok_ = Token{};
    tok_.column = i_ + 1;
    if (i_ >= s_.size()) return;
    const char c = s_[i_];
    auto single = [&](Token::Kind k) {
      tok_.kind = k;
      tok_.text = std::string(1, c);
      ++i_;
    };
    if (c == '(') return single(Token::LParen);
    if (c == ')') return single(Token::RParen);
    if (c == '[') return single(Token::LBracket);
    if (c == ']') return single(Token::RBracket);
    if (c == ',') return single(Token::Comma);
    if (c == '=' || c == '<' || c == '>' || c == '!') {
      tok_.kind = Token::Op;
      tok_.text = std::string(1, c);
      ++i_;
      if (i_ < s_.size() && s_[i_] == '=' && c != '=') tok_.text += '=', ++i_;
      else if (c == '=' && i_ < s_.size() && s_[i_] == '=') ++i_;  // "==" is "="
      if (tok_.text == "!") fail("'!' must be followed by '=' (use 'not' to negate)");
      return;
    }
    if (c == '"') {
      ++i_;
      std::string v;
      while (i_ < s_.size() && s_[i_] != '"') {
        if (s_[i_] == '\\' && i_ + 1 < s_.size()) ++i_;
        v += s_[i_++];
      }
      if (i_ >= s_.size()) fail("unterminated string");
      ++i_;
      tok_.kind = Token::String;
      tok_.text = v;
      return;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || ((c == '-' || c == '+' || c == '.') && i_ + 1 < s_.size() &&
                                                       (std::isdigit(static_cast<unsigned char>(s_[i_ + 1])) || s_[i_ + 1] == '.'))) {
      const char* start = s_.c_str() + i_;
      char* end = nullptr;
      const double v = std::strtod(start, &end);
      if (end == start) fail("malformed number");
      const size_t len = static_cast<size_t>(end - start);
      if (!std::isfinite(v)) fail("number " + s_.substr(i_, len) + " is out of range");
      tok_.kind = Token::Number;
      tok_.text = s_.substr(i_, len);
      tok_.number = v;
      i_ += len;
      if (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '_')) fail("malformed number", tok_.column);
      return;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      const size_t b = i_;
      while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '_' || s_[i_] == '.' || s_[i_] == '-')) ++i_;
      tok_.kind = Token::Ident;
      tok_.text = s_.substr(b, i_ - b);
      return;
    }
    fail(std::string("unexpected character '") + c + "'");
  }

  std::unique_ptr<WhereNode> parse_or(int depth) {
    auto left = parse_and(depth);
    if (!is_keyword("or")) return left;
    auto n = std::make_unique<WhereNode>();
    n->op = WhereNode::Op::Or;
    n->kids.push_back(std::move(left));
    while (is_keyword("or")) {
      next();
      n->kids.push_back(parse_and(depth));
    }
    return n;
  }

  std::unique_ptr<WhereNode> parse_and(int depth) {
    auto left = parse_unary(depth);
    if (!is_keyword("and")) return left;
    auto n = std::make_unique<WhereNode>();
    n->op = WhereNode::Op::And;
    n->kids.push_back(std::move(left));
    while (is_keyword("and")) {
      next();
      n->kids.push_back(parse_unary(depth));
    }
    return n;
  }

  std::unique_ptr<WhereNode> parse_unary(int depth) {
    if (depth > kMaxDepth) fail("the expression is nested deeper than " + std::to_string(kMaxDepth) + " levels");
    if (is_keyword("not")) {
      next();
      auto n = std::make_unique<WhereNode>();
      n->op = WhereNode::Op::Not;
      n->kids.push_back(parse_unary(depth + 1));
      return n;
    }
    if (tok_.kind == Token::LParen) {
      next();
      auto n = parse_or(depth + 1);
      if (tok_.kind != Token::RParen) fail("expected ')' but found " + describe(tok_));
      next();
      return n;
    }
    if (is_keyword("exists")) {
      next();
      auto n = std::make_unique<WhereNode>();
      n->op = WhereNode::Op::Exists;
      take_field(*n);
      return n;
    }
    auto n = std::make_unique<WhereNode>();
    take_field(*n);
    if (is_keyword("in")) {
      n->op = WhereNode::Op::In;
      next();
      if (tok_.kind != Token::LBracket) fail("expected '[' after 'in'");
      next();
      if (tok_.kind == Token::RBracket) fail("the list after 'in' is empty");
      for (;;) {
        n->values.push_back(literal());
        if (tok_.kind == Token::Comma) {
          next();
          continue;
        }
        if (tok_.kind != Token::RBracket) fail("expected ',' or ']' but found " + describe(tok_));
        next();
        break;
      }
      return n;
    }
    if (tok_.kind != Token::Op) fail("expected an operator (=, !=, <, <=, >, >=, in) after field '" + n->field_text + "'");
    const std::string op = tok_.text;
    const size_t op_column = tok_.column;
    n->op = op == "=" ? WhereNode::Op::Eq : op == "!=" ? WhereNode::Op::Ne : op == "<" ? WhereNode::Op::Lt
          : op == "<=" ? WhereNode::Op::Le : op == ">" ? WhereNode::Op::Gt : WhereNode::Op::Ge;
    next();
    const size_t value_column = tok_.column;
    n->values.push_back(literal());
    if (n->op != WhereNode::Op::Eq && n->op != WhereNode::Op::Ne && n->values[0].is_boolean())
      fail("'" + op + "' compares numbers or strings, not true/false (type mismatch)", value_column);
    (void)op_column;
    return n;
  }

  void take_field(WhereNode& n) {
    if (tok_.kind != Token::Ident) fail("expected a field name but found " + describe(tok_));
    const std::string kw = lower(tok_.text);
    if (kw == "and" || kw == "or" || kw == "not" || kw == "in" || kw == "exists" || kw == "true" || kw == "false")
      fail("expected a field name but found keyword '" + tok_.text + "'");
    n.field_text = tok_.text;
    n.column = tok_.column;
    size_t b = 0;
    for (;;) {
      const size_t dot = n.field_text.find('.', b);
      const std::string part = n.field_text.substr(b, dot == std::string::npos ? std::string::npos : dot - b);
      if (part.empty()) fail("field name '" + n.field_text + "' has an empty part");
      n.field.push_back(part);
      if (dot == std::string::npos) break;
      b = dot + 1;
    }
    next();
  }

  nlohmann::json literal() {
    nlohmann::json v;
    if (tok_.kind == Token::String) {
      v = tok_.text;
    } else if (tok_.kind == Token::Number) {
      v = tok_.number;
    } else if (tok_.kind == Token::Ident && tok_.text == "true") {
      v = true;
    } else if (tok_.kind == Token::Ident && tok_.text == "false") {
      v = false;
    } else if (tok_.kind == Token::Ident) {
      fail("expected a value but found '" + tok_.text + "' (strings take double quotes)");
    } else {
      fail("expected a value (\"string\", number, true or false) but found " + describe(tok_));
    }
    next();
    return v;
  }

  const std::string& s_;
  size_t i_ = 0;
  Token tok_;
};

// Equality between a stored scalar and a literal: numbers by value, strings and booleans exactly.
bool same(const nlohmann::json& a, const nlohmann::json& lit) {
  if (a.is_number() && lit.is_number()) return a.get<double>() == lit.get<double>();
  if (a.is_string() && lit.is_string()) return a.get_ref<const std::string&>() == lit.get_ref<const std::string&>();
  if (a.is_boolean() && lit.is_boolean()) return a.get<bool>() == lit.get<bool>();
  return false;
}

// -1, 0, 1, or 2 when the two cannot be ordered (different types).
int order(const nlohmann::json& a, const nlohmann::json& lit) {
  if (a.is_number() && lit.is_number()) {
    const double x = a.get<double>(), y = lit.get<double>();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && lit.is_string()) {
    const int c = a.get_ref<const std::string&>().compare(lit.get_ref<const std::string&>());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  return 2;
}

const nlohmann::json* lookup(const nlohmann::json& meta, const std::vector<std::string>& field) {
  const nlohmann::json* cur = &meta;
  for (const auto& part : field) {
    if (!cur->is_object()) return nullptr;
    const auto it = cur->find(part);
    if (it == cur->end()) return nullptr;
    cur = &*it;
  }
  return cur->is_null() ? nullptr : cur;
}

bool scalar_matches(WhereNode::Op op, const nlohmann::json& v, const std::vector<nlohmann::json>& lits) {
  switch (op) {
    case WhereNode::Op::Eq: return same(v, lits[0]);
    case WhereNode::Op::In:
      for (const auto& l : lits)
        if (same(v, l)) return true;
      return false;
    case WhereNode::Op::Lt: { const int o = order(v, lits[0]); return o == -1; }
    case WhereNode::Op::Le: { const int o = order(v, lits[0]); return o == -1 || o == 0; }
    case WhereNode::Op::Gt: { const int o = order(v, lits[0]); return o == 1; }
    case WhereNode::Op::Ge: { const int o = order(v, lits[0]); return o == 1 || o == 0; }
    default: return false;
  }
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string literal_text(const nlohmann::json& v) {
  if (v.is_string()) return quote(v.get<std::string>());
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number()) return v.dump();
  throw Error(ErrorCode::InvalidArgument, "where: a value must be a string, a number, true or false, not " + v.dump());
}

std::string field_text(const nlohmann::json& f) {
  if (!f.is_string() || f.get<std::string>().empty()) throw Error(ErrorCode::InvalidArgument, "where: \"field\" must be a non-empty string");
  return f.get<std::string>();
}

}  // namespace

std::unique_ptr<WhereNode> parse_where(const std::string& expression) { return Parser(expression).parse(); }

bool where_matches(const WhereNode& n, const nlohmann::json& meta) {
  switch (n.op) {
    case WhereNode::Op::And:
      for (const auto& k : n.kids)
        if (!where_matches(*k, meta)) return false;
      return true;
    case WhereNode::Op::Or:
      for (const auto& k : n.kids)
        if (where_matches(*k, meta)) return true;
      return false;
    case WhereNode::Op::Not: return !where_matches(*n.kids[0], meta);
    case WhereNode::Op::Exists: return lookup(meta, n.field) != nullptr;
    case WhereNode::Op::Ne: {
      const nlohmann::json* v = lookup(meta, n.field);
      if (!v) return false;
      if (v->is_array()) {
        for (const auto& e : *v)
          if (same(e, n.values[0])) return false;
        return true;
      }
      return !same(*v, n.values[0]);
    }
    default: {
      const nlohmann::json* v = lookup(meta, n.field);
      if (!v) return false;
      if (v->is_array()) {
        for (const auto& e : *v)
          if (scalar_matches(n.op, e, n.values)) return true;
        return false;
      }
      return scalar_matches(n.op, *v, n.values);
    }
  }
}

void for_each_comparison(const WhereNode& n, const std::function<void(const WhereNode&)>& f) {
  if (n.op == WhereNode::Op::And || n.op == WhereNode::Op::Or || n.op == WhereNode::Op::Not) {
    for (const auto& k : n.kids) for_each_comparison(*k, f);
    return;
  }
  f(n);
}

std::string where_json_to_string(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (!j.is_object() || j.size() == 0) throw Error(ErrorCode::InvalidArgument, "where: a JSON filter must be a string or an object");
  if (j.contains("and") || j.contains("or")) {
    const bool is_and = j.contains("and");
    const auto& list = j.at(is_and ? "and" : "or");
    if (j.size() != 1 || !list.is_array() || list.empty())
      throw Error(ErrorCode::InvalidArgument, std::string("where: \"") + (is_and ? "and" : "or") + "\" takes a non-empty array of filters");
    std::string out;
    for (const auto& x : list) out += (out.empty() ? "(" : is_and ? " and (" : " or (") + where_json_to_string(x) + ")";
    return out;
  }
  if (j.contains("not")) {
    if (j.size() != 1) throw Error(ErrorCode::InvalidArgument, "where: \"not\" stands alone in its object");
    return "not (" + where_json_to_string(j.at("not")) + ")";
  }
  if (j.contains("exists")) {
    if (j.size() != 1) throw Error(ErrorCode::InvalidArgument, "where: \"exists\" stands alone in its object");
    return "exists " + field_text(j.at("exists"));
  }
  if (!j.contains("field")) throw Error(ErrorCode::InvalidArgument, "where: unknown filter object " + j.dump() +
                                                                        " (keys: and, or, not, exists, field with op/value or in)");
  const std::string f = field_text(j.at("field"));
  if (j.contains("in")) {
    const auto& list = j.at("in");
    if (j.size() != 2 || !list.is_array() || list.empty())
      throw Error(ErrorCode::InvalidArgument, "where: \"in\" takes a non-empty array of values");
    std::string out = f + " in [";
    for (size_t i = 0; i < list.size(); ++i) out += (i ? ", " : "") + literal_text(list[i]);
    return out + "]";
  }
  if (!j.contains("value") || j.size() > 3) throw Error(ErrorCode::InvalidArgument, "where: a comparison is {\"field\", \"op\", \"value\"}");
  std::string op = "=";
  if (j.contains("op")) {
    if (!j.at("op").is_string()) throw Error(ErrorCode::InvalidArgument, "where: \"op\" must be a string");
    op = j.at("op").get<std::string>();
    if (op != "=" && op != "!=" && op != "<" && op != "<=" && op != ">" && op != ">=")
      throw Error(ErrorCode::InvalidArgument, "where: unknown op \"" + op + "\" (=, !=, <, <=, >, >=)");
  }
  return f + " " + op + " " + literal_text(j.at("value"));
}

}  // namespace clipkit::search
