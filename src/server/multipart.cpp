#include "server/multipart.h"

#include <cctype>
#include <string_view>

namespace clipkit::server {

namespace {

constexpr size_t kMaxParts = 1024;

std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The value of parameter `name` in a header value such as `form-data; name="a"; filename="b"`
// (quoted or a bare token); false when absent or malformed.
bool header_param(std::string_view value, std::string_view name, std::string* out) {
  size_t i = value.find(';');
  while (i != std::string_view::npos && i < value.size()) {
    ++i;
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t')) ++i;
    const size_t eq = value.find('=', i);
    if (eq == std::string_view::npos) return false;
    const std::string key = lower_ascii(trim(value.substr(i, eq - i)));
    size_t j = eq + 1;
    std::string v;
    if (j < value.size() && value[j] == '"') {
      ++j;
      while (j < value.size() && value[j] != '"') {
        if (value[j] == '\\' && j + 1 < value.size()) ++j;
        v += value[j++];
      }
      if (j >= value.size()) return false;  // no closing quote
      ++j;
    } else {
      const size_t end = value.find(';', j);
      v = std::string(trim(value.substr(j, end == std::string_view::npos ? std::string_view::npos : end - j)));
      j = end == std::string_view::npos ? value.size() : end;
    }
    if (key == name) {
      *out = std::move(v);
      return true;
    }
    i = value.find(';', j);
  }
  return false;
}

}  // namespace

bool parse_multipart_form(const std::string& content_type, const std::string& body, httplib::MultipartFormDataMap* files) {
  files->clear();
  if (lower_ascii(trim(std::string_view(content_type).substr(0, content_type.find(';')))) != "multipart/form-data") return false;
  std::string boundary;
  if (!header_param(content_type, "boundary", &boundary) || boundary.empty() || boundary.size() > 70) return false;
  const std::string dash = "--" + boundary;
  const std::string_view b(body);
  // The first delimiter (a preamble before it is allowed), then parts until the closing one.
  size_t pos = b.substr(0, dash.size()) == dash ? 0 : b.find("\r\n" + dash);
  if (pos == std::string_view::npos) return false;
  pos += pos == 0 ? dash.size() : dash.size() + 2;
  const std::string next = "\r\n" + dash;
  for (;;) {
    if (b.substr(pos, 2) == "--") return true;  // the closing delimiter
    // Transport padding, then the line break that ends the delimiter line.
    while (pos < b.size() && (b[pos] == ' ' || b[pos] == '\t')) ++pos;
    if (b.substr(pos, 2) != "\r\n") return false;
    pos += 2;
    if (files->size() >= kMaxParts) return false;
    const size_t head_end = b.find("\r\n\r\n", pos);
    if (head_end == std::string_view::npos) return false;
    httplib::MultipartFormData part;
    bool named = false;
    std::string_view heads = b.substr(pos, head_end - pos + 2);
    while (!heads.empty()) {
      const size_t eol = heads.find("\r\n");
      const std::string_view line = heads.substr(0, eol);
      heads.remove_prefix(eol + 2);
      if (line.empty()) continue;
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos) return false;
      const std::string key = lower_ascii(trim(line.substr(0, colon)));
      const std::string_view value = trim(line.substr(colon + 1));
      if (key == "content-disposition") {
        if (lower_ascii(trim(value.substr(0, value.find(';')))) != "form-data") return false;
        named = header_param(value, "name", &part.name);
        header_param(value, "filename", &part.filename);
      } else if (key == "content-type") {
        part.content_type = std::string(value);
      }
    }
    if (!named) return false;
    const size_t content = head_end + 4;
    const size_t end = b.find(next, content);
    if (end == std::string_view::npos) return false;
    part.content = std::string(b.substr(content, end - content));
    std::string name = part.name;
    files->emplace(std::move(name), std::move(part));
    pos = end + next.size();
  }
}

}  // namespace clipkit::server
