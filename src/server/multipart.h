// multipart/form-data request bodies (RFC 7578), parsed into cpp-httplib's form structures.
#pragma once

#include <httplib.h>

#include <string>

namespace clipkit::server {

// The parts of `body`, sent with the Content-Type `content_type`, keyed by field name. False when
// the Content-Type names no boundary or the body is not a well-formed multipart body (at most
// 1024 parts).
bool parse_multipart_form(const std::string& content_type, const std::string& body, httplib::MultipartFormDataMap* files);

}  // namespace clipkit::server
