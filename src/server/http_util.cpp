#include "server/http_util.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>

namespace clipkit::server {

int status_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArgument:
    case ErrorCode::Format:
    case ErrorCode::Shape:
      return 400;
    case ErrorCode::NotFound:
      return 404;
    case ErrorCode::Limit:
      return 413;
    default:
      return 500;
  }
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, const json& j, int status) {
  res.status = status;
  res.set_content(dump(j), "application/json; charset=utf-8");
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, json{{"error", message}}, status);
}

const char* status_text(int status) {
  switch (status) {
    case 400: return "bad request";
    case 401: return "a bearer token is required";
    case 403: return "forbidden";
    case 404: return "not found";
    case 405: return "method not allowed";
    case 411: return "a Content-Length is required";
    case 413: return "request body too large";
    case 414: return "request URI too long";
    case 415: return "unsupported media type";
    case 416: return "range not satisfiable";
    default: return status >= 500 ? "internal error" : "request failed";
  }
}

int64_t parse_int(const std::string& name, const std::string& s) {
  if (s.empty() || s.size() > 18) throw HttpError(400, "parameter " + name + ": '" + s + "' is not an integer");
  size_t i = s[0] == '-' || s[0] == '+' ? 1 : 0;
  if (i == s.size()) throw HttpError(400, "parameter " + name + ": '" + s + "' is not an integer");
  for (size_t j = i; j < s.size(); ++j)
    if (s[j] < '0' || s[j] > '9') throw HttpError(400, "parameter " + name + ": '" + s + "' is not an integer");
  return std::stoll(s);
}

double parse_number(const std::string& name, const std::string& s) {
  const auto bad = [&] { return HttpError(400, "parameter " + name + ": '" + s + "' is not a finite number"); };
  if (s.empty() || s.size() > 64) throw bad();
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) throw bad();
  return v;
}

int64_t parse_id(const std::string& s) {
  if (s.empty() || s.size() > 18) throw HttpError(400, "'" + s + "' is not an item id");
  for (char c : s)
    if (c < '0' || c > '9') throw HttpError(400, "'" + s + "' is not an item id");
  return std::stoll(s);
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string loggable(const std::string& s, size_t max) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    out += c < 0x20 || c >= 0x7f ? '?' : static_cast<char>(c);
  }
  if (s.size() > max) out += "...";
  return out;
}

const char* sniff_image_type(const char* p, size_t n) {
  auto starts = [&](const char* sig, size_t len, size_t at = 0) { return n >= at + len && std::memcmp(p + at, sig, len) == 0; };
  if (starts("\xFF\xD8\xFF", 3)) return "image/jpeg";
  if (starts("\x89PNG\r\n\x1a\n", 8)) return "image/png";
  if (starts("GIF87a", 6) || starts("GIF89a", 6)) return "image/gif";
  if (starts("RIFF", 4) && starts("WEBP", 4, 8)) return "image/webp";
  if (starts("BM", 2)) return "image/bmp";
  return "application/octet-stream";
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string host_name(const std::string& value) {
  std::string name, port;
  if (!value.empty() && value[0] == '[') {
    const size_t close = value.find(']');
    if (close == std::string::npos) return "";
    name = value.substr(1, close - 1);
    if (close + 1 < value.size()) {
      if (value[close + 1] != ':') return "";
      port = value.substr(close + 2);
      if (port.empty()) return "";
    }
    in6_addr a6{};
    if (inet_pton(AF_INET6, name.c_str(), &a6) != 1) return "";
    name = "[" + name + "]";
  } else {
    const size_t colon = value.find(':');
    name = value.substr(0, colon);
    if (colon != std::string::npos) {
      port = value.substr(colon + 1);
      if (port.empty()) return "";
    }
    for (char c : name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_')) return "";
  }
  if (port.size() > 5) return "";
  for (char c : port)
    if (c < '0' || c > '9') return "";
  name = lower(name);
  if (name.size() > 1 && name.back() == '.' && name[0] != '[') name.pop_back();
  return name;
}

bool is_loopback_name(const std::string& name) {
  if (name == "localhost") return true;
  if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
    in6_addr a6{};
    return inet_pton(AF_INET6, name.substr(1, name.size() - 2).c_str(), &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
  }
  in_addr a4{};
  return inet_pton(AF_INET, name.c_str(), &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

bool same_secret(const std::string& given, const std::string& expected) {
  volatile unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i)
    diff = diff | static_cast<unsigned char>(expected[i] ^ (i < given.size() ? given[i] : 0));
  return diff == 0;
}

}  // namespace clipkit::server
