// Wording shared by the verbs' messages.
#pragma once
#include <string>

namespace clipkit::cli {

// "PATH: reason", naming the path once: a reason that already starts with the path (the image
// decoders' "PATH: empty file, not an image") or names it at its end is shortened.
inline std::string failure_text(const std::string& path, std::string reason) {
  for (const std::string& prefix : {path + ": ", "'" + path + "': "})
    while (reason.rfind(prefix, 0) == 0) reason = reason.substr(prefix.size());
  for (const std::string& quoted : {" '" + path + "'", " " + path}) {
    const auto at = reason.find(quoted);
    if (at != std::string::npos && (at + quoted.size() == reason.size() || reason[at + quoted.size()] == ':'))
      reason.erase(at, quoted.size());
  }
  return path + ": " + reason;
}

}  // namespace clipkit::cli
