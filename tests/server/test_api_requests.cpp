// The JSON bodies of POST /api/recommend and POST /api/items (docs/server.md) as the server
// parses them: every field read into its option, every malformed field a 400 naming it.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <set>

#include "server/api_requests.h"
#include "server/http_util.h"
#include "support/test_support.h"

namespace clipkit::server {
namespace {

using nlohmann::json;

// The HttpError a call throws: status and message (status 0 when nothing was thrown).
std::pair<int, std::string> http_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const HttpError& e) {
    return {e.status, e.what()};
  }
  return {0, ""};
}

TEST(ApiRequests, RecommendBodyFieldsAreRead) {
  const json j = json::parse(R"({"positive": [3, "text:a cat", {"text": "dog"}, {"vector": [1, -2.5]}],
      "negative": ["photos/a.jpg", "#7"], "exclude": [5, 6], "tags": ["x", "y"], "path_prefix": "p/",
      "k": 500, "offset": 2, "min_score": 0.25, "diversity": 0.5, "strategy": "best-score"})");
  const RecommendBody r = parse_recommend_body(j, 100, 2);
  ASSERT_EQ(r.positive.size(), 4u);
  EXPECT_EQ(r.positive[0].term.kind, QueryTerm::Kind::Item);
  EXPECT_EQ(r.positive[0].term.value, "#3");
  EXPECT_EQ(r.positive[1].term.kind, QueryTerm::Kind::Text);
  EXPECT_EQ(r.positive[1].term.value, "a cat");
  EXPECT_EQ(r.positive[2].term.kind, QueryTerm::Kind::Text);
  EXPECT_EQ(r.positive[2].term.value, "dog");
  EXPECT_EQ(r.positive[3].term.kind, QueryTerm::Kind::Vector);
  EXPECT_EQ(r.positive[3].term.vector, (std::vector<float>{1.0f, -2.5f}));
  ASSERT_EQ(r.negative.size(), 2u);
  EXPECT_EQ(r.negative[0].term.kind, QueryTerm::Kind::Item);
  EXPECT_EQ(r.negative[0].term.value, "photos/a.jpg");
  EXPECT_EQ(r.negative[1].term.value, "#7");
  EXPECT_EQ(r.options.search.exclude_ids, (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(r.options.search.filter.tags, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(r.options.search.filter.path_prefix, "p/");
  EXPECT_EQ(r.options.search.k, 100);  // capped at max_k
  EXPECT_EQ(r.offset, 2);
  EXPECT_EQ(r.options.search.min_score, 0.25f);
  EXPECT_EQ(r.options.diversity, 0.5f);
  EXPECT_EQ(r.options.strategy, RecommendOptions::Strategy::BestScore);
  // a null min_score keeps the default; k defaults to 20 within max_k
  const RecommendBody d = parse_recommend_body(json::parse(R"({"positive": [1], "min_score": null})"), 10, 2);
  EXPECT_EQ(d.options.search.min_score, RecommendOptions().search.min_score);
  EXPECT_EQ(d.options.search.k, 10);
}

TEST(ApiRequests, MalformedRecommendFieldsAre400sNamingThem) {
  const std::vector<std::pair<const char*, std::string>> cases = {
      {R"({"positive": [-1]})", "\"positive\" must hold item ids (non-negative integers)"},
      {R"({"positive": [1], "exclude": [-4]})", "\"exclude\" must hold item ids (non-negative integers)"},
      {R"({"positive": ["image:a.jpg"]})", "image: examples name files on the server"},
      {R"({"positive": [{"vector": [1, "x"]}]})", "a vector example holds a value that is not a finite number"},
      {R"({"positive": [{"vector": [1]}]})", "a vector example has 1 values, the index dim is 2"},
      {R"({"negative": [{"colour": "red"}]})", "an example in \"negative\" must be an item id, a path"},
      {R"({"positive": [1], "where": 5})", "\"where\" must be a filter string or its JSON form (an object)"},
      {R"({"positive": [1], "exclude": 3})", "\"exclude\" must be an array of item ids"},
      {R"({"positive": [1], "path_prefix": 3})", "\"path_prefix\" must be a string"},
      {R"({"positive": [1], "offset": 101})", "\"offset\" must be an integer in 0..100"},
      {R"({"positive": [1], "min_score": "high"})", "\"min_score\" must be a finite number"},
      {R"({"positive": [1], "tags": [""]})", "\"tags\" must hold non-empty strings"},
      {R"({"positive": [1], "colour": 1})", "unknown field \"colour\""},
      {R"({"k": 5})", "give at least one \"positive\" or \"negative\" example"},
  };
  for (const auto& [body, message] : cases) {
    const char* text = body;  // clang 15 cannot capture a structured binding
    const auto [status, msg] = http_error([text] { parse_recommend_body(json::parse(text), 100, 2); });
    EXPECT_EQ(status, 400) << body;
    EXPECT_EQ(msg.rfind(message, 0), 0u) << body << ": " << msg;
  }
}

TEST(ApiRequests, ItemBodiesAndJsonObjects) {
  const ItemBody b = parse_item_body(json::parse(R"({"name": "x.jpg", "image": "aGVs bG8=", "tags": "t",
                                                     "meta": {"a": 1}})"));
  EXPECT_EQ(b.image_bytes, "hello");
  EXPECT_EQ(b.name, "x.jpg");
  EXPECT_EQ(b.tags, (std::vector<std::string>{"t"}));
  EXPECT_EQ(json::parse(b.meta), json({{"a", 1}}));
  const std::vector<std::pair<const char*, std::string>> cases = {
      {R"({"path": "a.jpg", "name": 3})", "\"name\" must be a string"},
      {R"({"image": 3})", "\"image\" must be the image bytes in base64"},
      {R"({"image": "a*b"})", "\"image\" is not valid base64"},
      {R"({"colour": 1})", "unknown field \"colour\" (known: path, image, name, meta, tags)"},
  };
  for (const auto& [body, message] : cases) {
    const char* text = body;  // clang 15 cannot capture a structured binding
    const auto [status, msg] = http_error([text] { parse_item_body(json::parse(text)); });
    EXPECT_EQ(status, 400) << body;
    EXPECT_EQ(msg, message) << body;
  }
  auto [status, msg] = http_error([] { parse_json_object("[1]", 100); });
  EXPECT_EQ(status, 400);
  EXPECT_EQ(msg, "the request body must be a JSON object");
  std::tie(status, msg) = http_error([] { parse_json_object("{\"a\": ", 100); });
  EXPECT_EQ(status, 400);
  EXPECT_EQ(msg.rfind("malformed JSON: ", 0), 0u) << msg;
  std::tie(status, msg) = http_error([] { parse_json_object(std::string(101, ' '), 100); });
  EXPECT_EQ(status, 413);
}

TEST(HttpUtil, StatusOfEachErrorCodeAsDocumented) {
  // docs/server.md: 400 for bad input, 404 for what is not there, 413 over a limit, 500 otherwise
  for (ErrorCode c : {ErrorCode::InvalidArgument, ErrorCode::Format, ErrorCode::Shape}) EXPECT_EQ(status_for(c), 400);
  EXPECT_EQ(status_for(ErrorCode::NotFound), 404);
  EXPECT_EQ(status_for(ErrorCode::Limit), 413);
  for (ErrorCode c : {ErrorCode::Io, ErrorCode::Mismatch, ErrorCode::Internal}) EXPECT_EQ(status_for(c), 500);
  // every status the server answers with has its own one-line text; unknown ones a generic one
  std::set<std::string> texts;
  for (int s : {400, 401, 403, 404, 405, 411, 413, 414, 415, 416}) texts.insert(status_text(s));
  EXPECT_EQ(texts.size(), 10u);
  EXPECT_EQ(texts.count(status_text(500)), 0u);
  EXPECT_EQ(texts.count(status_text(418)), 0u);
  EXPECT_EQ(std::string(status_text(503)), status_text(500));
}

TEST(HttpUtil, ImageTypesAreSniffedFromTheFixturesBytes) {
  const std::vector<std::pair<const char*, const char*>> files = {
      {"vision/src/jpeg_444.jpg", "image/jpeg"}, {"vision/src/png_l8.png", "image/png"},
      {"vision/src/gif_global.gif", "image/gif"}, {"vision/src/webp_lossy.webp", "image/webp"},
      {"vision/src/bmp_24.bmp", "image/bmp"},     {"imagenet_classes.json", "application/octet-stream"}};
  for (const auto& [file, type] : files) {
    std::ifstream f(test::data_path(file), std::ios::binary);
    std::string head(16, '\0');
    f.read(head.data(), 16);
    EXPECT_STREQ(sniff_image_type(head.data(), static_cast<size_t>(f.gcount())), type) << file;
  }
  EXPECT_STREQ(sniff_image_type("RIFF", 4), "application/octet-stream");  // too short for WebP
}

}  // namespace
}  // namespace clipkit::server
