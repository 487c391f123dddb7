// Lookup of the embedded web page files.
#include "server/web_assets.h"

extern "C" {
extern const char clipkit_web_index_html[], clipkit_web_index_html_end[];
extern const char clipkit_web_app_js[], clipkit_web_app_js_end[];
extern const char clipkit_web_style_css[], clipkit_web_style_css_end[];
}

namespace clipkit::server {

bool find_web_asset(const std::string& path, WebAsset* out) {
  struct Entry {
    const char* path;
    const char* begin;
    const char* end;
    const char* mime;
  };
  static const Entry entries[] = {
      {"/", clipkit_web_index_html, clipkit_web_index_html_end, "text/html; charset=utf-8"},
      {"/index.html", clipkit_web_index_html, clipkit_web_index_html_end, "text/html; charset=utf-8"},
      {"/app.js", clipkit_web_app_js, clipkit_web_app_js_end, "text/javascript; charset=utf-8"},
      {"/style.css", clipkit_web_style_css, clipkit_web_style_css_end, "text/css; charset=utf-8"},
  };
  for (const auto& e : entries) {
    if (path != e.path) continue;
    out->content = std::string_view(e.begin, static_cast<size_t>(e.end - e.begin));
    out->mime_type = e.mime;
    return true;
  }
  return false;
}

}  // namespace clipkit::server
