// Model downloads: the official OpenAI checkpoints (their URLs carry the file's SHA-256) and the
// OpenAI CLIP repositories on the Hugging Face hub. Downloads are resumable (`<file>.part` plus an
// HTTP Range request), SHA-256 verified, and atomic: the final name appears only after the hash
// matched; a mismatch removes the `.part` file.
//
// The scheme and host of every URL can be replaced, for mirrors and tests, with the environment
// variable CLIPKIT_DOWNLOAD_BASE_URL (e.g. "http://127.0.0.1:8080"; the URL path is appended). Redirects
// are then rebased onto it too, so nothing is fetched from another host.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace clipkit {

struct RemoteFile {
  std::string name;    // file name in the destination folder
  std::string url;     // canonical URL
  std::string sha256;  // expected lower-case hex digest; empty when not published
};

struct ModelSource {
  std::string name;    // "ViT-B/32", "openai/clip-vit-base-patch32"
  std::string kind;    // "openai-jit" (one TorchScript .pt) or "hf" (a Hugging Face folder)
  std::string folder;  // sub-folder of the download dir for "hf" models; empty for single files
  std::vector<RemoteFile> files;
};

// Every model `clipkit models download` knows, OpenAI first.
const std::vector<ModelSource>& known_models();
// nullptr when unknown. OpenAI names also match with '-' for '/' ("ViT-B-32"), case-insensitively.
const ModelSource* find_model(const std::string& name);

struct DownloadOptions {
  // Replaces scheme://host[:port] of each URL; empty: use $CLIPKIT_DOWNLOAD_BASE_URL if set.
  std::string base_url;
  // Called with (bytes so far, total bytes or 0 when unknown) for the file being fetched.
  std::function<void(const std::string& file, uint64_t done, uint64_t total)> progress;
  int connect_timeout_s = 30;
  int read_timeout_s = 120;
};

struct DownloadResult {
  std::string path;          // final file
  std::string sha256;        // computed digest of the final file
  uint64_t bytes = 0;        // size of the final file
  uint64_t fetched = 0;      // bytes transferred by this call
  uint64_t resumed_from = 0; // bytes of an earlier .part that were kept
  bool already_present = false;  // the file was there with the expected hash; nothing fetched
  bool verified = false;     // an expected hash was known and matched
};

// Downloads one file to `dest` (see the header comment). Throws Error(Io) for network and HTTP
// failures (the .part file is kept so that a rerun resumes), Error(Mismatch) for a hash mismatch.
DownloadResult download_file(const std::string& url, const std::string& dest, const std::string& expected_sha256,
                             const DownloadOptions& options = {});

// The SHA-256 a Hugging Face hub resolve URL publishes for a file stored with Git LFS (its
// `X-Linked-Etag` response header), asked for with a HEAD request that does not follow the redirect.
// "" when the answer carries none (a plain git file, another server, an HTTP error: the download
// then reports it). Throws Error(Io) when no answer comes. The base-URL override applies.
std::string hub_published_sha256(const std::string& url, const DownloadOptions& options = {});

// Downloads every file of a known model under `dir`; throws Error(NotFound) for an unknown name.
std::vector<DownloadResult> download_model(const std::string& name, const std::string& dir,
                                           const DownloadOptions& options = {});

// The path `load_checkpoint` should be given for a model downloaded under `dir`.
std::string model_path(const ModelSource& model, const std::string& dir);

// Lower-case hex SHA-256 of a file / of bytes (OpenSSL EVP).
std::string sha256_file(const std::string& path);
std::string sha256_digest_hex(const void* data, size_t size);

// Applies a base-URL override ("" = none) to a URL; exposed for tests.
std::string rebase_url(const std::string& url, const std::string& base);

}  // namespace clipkit
