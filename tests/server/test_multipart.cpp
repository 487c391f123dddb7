// multipart/form-data bodies as the server's transport parses them for the upload route.
#include <gtest/gtest.h>

#include "server/multipart.h"

namespace clipkit::server {
namespace {

const std::string kType = "multipart/form-data; boundary=XyZ123";

TEST(Multipart, PartsWithNamesFilenamesAndTypes) {
  const std::string body =
      "--XyZ123\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
      "--XyZ123\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a;b \\\"c\\\".png\"\r\n"
      "Content-Type: image/png\r\n\r\n\x89PNG\r\n--not the boundary\r\n\r\n"
      "--XyZ123--\r\n";
  httplib::MultipartFormDataMap files;
  ASSERT_TRUE(parse_multipart_form(kType, body, &files));
  ASSERT_EQ(files.size(), 2u);
  const auto& note = files.find("note")->second;
  EXPECT_EQ(note.content, "hello");
  EXPECT_EQ(note.filename, "");
  const auto& image = files.find("image")->second;
  EXPECT_EQ(image.filename, "a;b \"c\".png");
  EXPECT_EQ(image.content_type, "image/png");
  EXPECT_EQ(image.content, "\x89PNG\r\n--not the boundary\r\n");
}

TEST(Multipart, QuotedBoundaryAndPreamble) {
  const std::string body = "preamble\r\n--b\r\ncontent-disposition: FORM-DATA; name=x\r\n\r\n1\r\n--b--";
  httplib::MultipartFormDataMap files;
  ASSERT_TRUE(parse_multipart_form("Multipart/Form-Data; charset=utf-8; boundary=\"b\"", body, &files));
  ASSERT_EQ(files.count("x"), 1u);
  EXPECT_EQ(files.find("x")->second.content, "1");
}

TEST(Multipart, MalformedBodiesAreRefused) {
  httplib::MultipartFormDataMap files;
  const std::string part = "--XyZ123\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n";
  EXPECT_FALSE(parse_multipart_form("multipart/form-data", part + "--XyZ123--", &files)) << "no boundary";
  EXPECT_FALSE(parse_multipart_form("multipart/form-data; boundary=", part + "--XyZ123--", &files)) << "empty boundary";
  EXPECT_FALSE(parse_multipart_form("text/plain; boundary=XyZ123", part + "--XyZ123--", &files)) << "not a form";
  EXPECT_FALSE(parse_multipart_form(kType, part, &files)) << "no closing delimiter";
  EXPECT_FALSE(parse_multipart_form(kType, "--XyZ123\r\nContent-Disposition: form-data\r\n\r\n1\r\n--XyZ123--", &files))
      << "a part without a name";
  EXPECT_FALSE(parse_multipart_form(kType, "--XyZ123\r\nContent-Disposition: form-data; name=\"a\r\n\r\n1\r\n--XyZ123--", &files))
      << "an unclosed quote";
  EXPECT_FALSE(parse_multipart_form(kType, "--XyZ123\r\nno colon here\r\n\r\n1\r\n--XyZ123--", &files)) << "a bad header line";
  EXPECT_FALSE(parse_multipart_form(kType, "", &files)) << "empty body";
  std::string many;
  for (int i = 0; i < 1025; ++i) many += "--XyZ123\r\nContent-Disposition: form-data; name=\"p\"\r\n\r\n\r\n";
  EXPECT_FALSE(parse_multipart_form(kType, many + "--XyZ123--", &files)) << "more than 1024 parts";
  EXPECT_TRUE(parse_multipart_form(kType, "--XyZ123--", &files));
  EXPECT_TRUE(files.empty());
}

}  // namespace
}  // namespace clipkit::server
