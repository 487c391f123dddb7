// The files an `index add` or `index build` of some inputs considers.
#pragma once
#include <string>
#include <vector>

namespace clipkit::search {

struct SourceProblem {
  std::string input;
  bool missing = false;  // the input does not exist; otherwise its folder could not be listed
  std::string reason;    // "not found", or "cannot list folder: ..."
};

// The candidate files of `inputs`: a file as given, a folder's files with an image extension (its
// sub-folders too when `recursive`), all absolute and normalised, sorted, without duplicates and
// without anything inside `index_dir`. Inputs that cannot be read are reported in `problems`.
std::vector<std::string> list_image_files(const std::vector<std::string>& inputs, bool recursive, const std::string& index_dir,
                                          std::vector<SourceProblem>* problems);

}  // namespace clipkit::search
