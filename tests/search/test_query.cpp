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

TEST(SearchQuery, WeightsAFloatCannotHoldAreErrorsNamingThem) {
  for (const std::string bad : {"1e400*text:a", "1e-400*text:a", "text:a - 1e39 * text:b", "0.5*text:a + 99999e99*like:3"}) {
    try {
      parse_query(bad);
      FAIL() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << bad;
      EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
    }
  }
  try {
    parse_query("1e400*text:a");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight '1e400'"), std::string::npos) << e.what();
  }
  // Not followed by a term kind, the number is part of the text.
  const Query q = parse_query("text:x + 1e400*y");
  ASSERT_EQ(q.terms.size(), 1u);
  EXPECT_EQ(q.terms[0].value, "x + 1e400*y");
  EXPECT_FLOAT_EQ(parse_query("3e38*text:a").terms[0].weight, 3e38f);
}
