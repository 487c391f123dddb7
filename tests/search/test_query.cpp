// Query expression syntax.
#include <gtest/gtest.h>

#include "clipkit/error.h"
#include "clipkit/index.h"

using namespace clipkit;
using K = QueryTerm::Kind;

TEST(SearchQuery, SingleTerms) {
  Query q = parse_query("text:a photo of a dog");
  ASSERT_EQ(q.terms.size(), 1u);
  EXPECT_EQ(q.terms[0].kind, K::Text);
  EXPECT_EQ(q.terms[0].value, "a photo of a dog");
  EXPECT_FLOAT_EQ(q.terms[0].weight, 1.0f);
  q = parse_query("  image:/tmp/a b.jpg  ");
  EXPECT_EQ(q.terms[0].kind, K::Image);
  EXPECT_EQ(q.terms[0].value, "/tmp/a b.jpg");
  q = parse_query("like:42");
  EXPECT_EQ(q.terms[0].kind, K::Item);
  EXPECT_EQ(q.terms[0].value, "42");
}

TEST(SearchQuery, WeightedCombination) {
  Query q = parse_query("image:a.jpg + 0.5*text:in red - text:indoors");
  ASSERT_EQ(q.terms.size(), 3u);
  EXPECT_EQ(q.terms[0].value, "a.jpg");
  EXPECT_EQ(q.terms[1].kind, K::Text);
  EXPECT_EQ(q.terms[1].value, "in red");
  EXPECT_FLOAT_EQ(q.terms[1].weight, 0.5f);
  EXPECT_EQ(q.terms[2].value, "indoors");
  EXPECT_FLOAT_EQ(q.terms[2].weight, -1.0f);
  q = parse_query("-2 * text:night+text:day");  // "+text:" without spaces is part of the value
  ASSERT_EQ(q.terms.size(), 1u);
  EXPECT_FLOAT_EQ(q.terms[0].weight, -2.0f);
  EXPECT_EQ(q.terms[0].value, "night+text:day");
  q = parse_query("text:t-shirt - 1e-1*text:a - b");
  ASSERT_EQ(q.terms.size(), 2u);
  EXPECT_EQ(q.terms[0].value, "t-shirt");
  EXPECT_FLOAT_EQ(q.terms[1].weight, -0.1f);
  EXPECT_EQ(q.terms[1].value, "a - b");
}

TEST(SearchQuery, Quoted) {
  Query q = parse_query("text:\"a + b - text:c\" + like:\"x\\\"y\"");
  ASSERT_EQ(q.terms.size(), 2u);
  EXPECT_EQ(q.terms[0].value, "a + b - text:c");
  EXPECT_EQ(q.terms[1].value, "x\"y");
}

TEST(SearchQuery, Errors) {
  for (const char* bad : {"", "   ", "cat", "text:", "text:\"open", "video:x.mp4", "text:a + text:", "text:\"a\" b", "0.5*"}) {
    try {
      parse_query(bad);
      FAIL() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << bad;
    }
  }
}

TEST(SearchQuery, OutOfRangeWeightIsAnError) {
  // a weight beyond float's range is refused with a clipkit::Error (it escaped as std::out_of_range)
  for (const char* bad : {"1e99999*text:x", "text:a - 99999999999999999999999999999999999999999*text:b"}) {
    try {
      parse_query(bad);
      FAIL() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << bad;
      EXPECT_NE(std::string(e.what()).find("not finite"), std::string::npos) << e.what();
    }
  }
  // a weight that underflows is zero
  EXPECT_EQ(parse_query("1e-99999*text:x").terms[0].weight, 0.0f);
}
