// The embedded files of the web page (web/ in the source tree, see web_assets.S).
#pragma once
#include <string>
#include <string_view>

namespace clipkit::server {

struct WebAsset {
  std::string_view content;
  const char* mime_type;
};

// The asset served at `path` ("/", "/app.js", "/style.css"); false for any other path.
bool find_web_asset(const std::string& path, WebAsset* out);

}  // namespace clipkit::server
