// Small HTTP helpers of `clipkit serve`: JSON replies and errors, parameter parsing, Host checks.
#pragma once

#include <httplib.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "clipkit/error.h"

namespace clipkit::server {

using json = nlohmann::json;

// A failure with its HTTP status; handlers throw it, the dispatcher turns it into JSON.
struct HttpError : std::runtime_error {
  HttpError(int s, const std::string& message) : std::runtime_error(message), status(s) {}
  int status;
};

int status_for(ErrorCode code);

std::string dump(const json& j);

void send_json(httplib::Response& res, const json& j, int status = 200);

void send_error(httplib::Response& res, int status, const std::string& message);

const char* status_text(int status);

// Strict number parsing for query-string parameters.
int64_t parse_int(const std::string& name, const std::string& s);

double parse_number(const std::string& name, const std::string& s);

// Catalog ids in paths: decimal digits only.
int64_t parse_id(const std::string& s);

std::string utc_now();

// Request targets in the log: printable ASCII only, bounded.
std::string loggable(const std::string& s, size_t max = 300);

const char* sniff_image_type(const char* p, size_t n);

std::string lower(std::string s);

// The host name of a Host header value ("name", "name:port", "[v6]", "[v6]:port"), lowercased and
// without a final dot; empty when the value is malformed.
std::string host_name(const std::string& value);

// localhost, 127.x.x.x (dotted decimal) and [::1].
bool is_loopback_name(const std::string& name);

// Compares a presented secret with the expected one in time that depends only on the expected
// one's length.
bool same_secret(const std::string& given, const std::string& expected);

}  // namespace clipkit::server
