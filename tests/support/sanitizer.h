// CLIPKIT_TEST_ASAN is defined when the tests run under AddressSanitizer (g++ defines
// __SANITIZE_ADDRESS__, clang answers __has_feature).
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define CLIPKIT_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CLIPKIT_TEST_ASAN 1
#endif
#endif
