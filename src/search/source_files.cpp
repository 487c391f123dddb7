#include "search/source_files.h"

#include "search/index_impl.h"

namespace clipkit::search {

std::vector<std::string> list_image_files(const std::vector<std::string>& inputs, bool recursive, const std::string& index_dir,
                                          std::vector<SourceProblem>* problems) {
  std::vector<std::string> files;
  const std::string idir = normalize_path(index_dir);
  for (const auto& in : inputs) {
    std::error_code ec;
    const fs::path p(in);
    const auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) {
      problems->push_back({in, true, "not found"});
      continue;
    }
    if (!fs::is_directory(st)) {
      files.push_back(normalize_path(in));
      continue;
    }
    auto take = [&](const fs::directory_entry& e) {
      std::error_code e2;
      if (e.is_regular_file(e2) && is_image_name(e.path())) {
        const std::string np = normalize_path(e.path().string());
        if (np.compare(0, idir.size() + 1, idir + "/") != 0) files.push_back(np);
      }
    };
    if (recursive) {
      for (fs::recursive_directory_iterator it(p, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end;
           it.increment(ec))
        take(*it);
    } else {
      for (fs::directory_iterator it(p, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end; it.increment(ec))
        take(*it);
    }
    if (ec) problems->push_back({in, false, "cannot list folder: " + ec.message()});
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

}  // namespace clipkit::search
