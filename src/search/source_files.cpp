#include "search/source_files.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <system_error>

#include "search/index_impl.h"

namespace clipkit::search {

namespace {

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

// The image files in `dir` (and its sub-folders when `recursive`; symbolic links to folders are not
// followed). Written with readdir rather than std::filesystem's directory iterators: libstdc++
// advances those in a noexcept function, so an allocation failing while they read an entry ends
// the process instead of throwing. A folder that cannot be opened for lack of permission is
// skipped; any other failure sets `ec` and stops the listing.
void list_folder(const fs::path& dir, bool recursive, const std::string& idir, std::vector<std::string>* files,
                 std::error_code* ec) {
  std::unique_ptr<DIR, DirCloser> d(::opendir(dir.c_str()));
  if (!d) {
    if (errno != EACCES) *ec = std::error_code(errno, std::generic_category());
    return;
  }
  std::vector<fs::path> subfolders;
  for (;;) {
    errno = 0;
    const dirent* e = ::readdir(d.get());
    if (!e) {
      if (errno != 0) *ec = std::error_code(errno, std::generic_category());
      break;
    }
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    const fs::path path = dir / e->d_name;
    struct stat st {};
    if (recursive && ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      subfolders.push_back(path);
      continue;
    }
    if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && is_image_name(path)) {
      const std::string np = normalize_path(path.string());
      if (np.compare(0, idir.size() + 1, idir + "/") != 0) files->push_back(np);
    }
  }
  d.reset();
  for (const auto& sub : subfolders) {
    list_folder(sub, recursive, idir, files, ec);
    if (*ec) return;
  }
}

}  // namespace

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
    list_folder(p, recursive, idir, &files, &ec);
    if (ec) problems->push_back({in, false, "cannot list folder: " + ec.message()});
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

}  // namespace clipkit::search
