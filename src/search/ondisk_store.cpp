#include "search/ondisk_store.h"

#include <faiss/IVFlib.h>
#include <faiss/IndexIVF.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_io.h>
#include <faiss/invlists/OnDiskInvertedLists.h>

#include <cstring>
#include <filesystem>

#include "clipkit/error.h"
#include "core/mapped_file.h"

namespace clipkit::search {

namespace {

namespace fs = std::filesystem;

constexpr char kExactMagic[8] = {'C', 'K', 'E', 'X', 'A', 'C', 'T', '1'};
constexpr size_t kExactHeader = 8 + 4 + 4 + 8 + 8;

// The inverted lists already carry the catalog ids: searches pass faiss's labels through.
struct CatalogLabelledIndex : faiss::IndexIDMap2 {
  explicit CatalogLabelledIndex(faiss::Index* inner) {
    index = inner;
    own_fields = true;
    d = inner->d;
    ntotal = inner->ntotal;
    is_trained = inner->is_trained;
    metric_type = inner->metric_type;
  }
  void search(idx_t n, const float* x, idx_t k, float* distances, idx_t* labels,
              const faiss::SearchParameters* params = nullptr) const override {
    index->search(n, x, k, distances, labels, params);
  }
  void range_search(idx_t n, const float* x, float radius, faiss::RangeSearchResult* result,
                    const faiss::SearchParameters* params = nullptr) const override {
    index->range_search(n, x, radius, result, params);
  }
  void reconstruct(idx_t, float*) const override {
    FAISS_THROW_MSG("an on-disk index does not reconstruct vectors (the catalog holds them)");
  }
};

}  // namespace

std::unique_ptr<faiss::IndexIDMap2> open_ondisk_index(const std::string& dir, int dim, int64_t expected_ntotal) {
  const std::string path = (fs::path(dir) / kOnDiskIndexName).string();
  const std::string lists = (fs::path(dir) / kOnDiskListsName).string();
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(ErrorCode::Format, "on-disk index " + path + " is missing (rerun the build's merge)");
  if (!fs::exists(lists, ec)) throw Error(ErrorCode::Format, "inverted lists " + lists + " are missing (rerun the build's merge)");
  auto faiss_error = [](const std::exception& e) {
    std::string msg = e.what();
    const auto nl = msg.find('\n');
    return nl == std::string::npos ? msg : msg.substr(0, nl);
  };
  std::unique_ptr<faiss::Index> owned;
  try {
    // The list offsets only; the lists file is then mapped read-only from the index's own folder,
    // wherever the index was built or moved to.
    owned.reset(faiss::read_index(path.c_str(), faiss::IO_FLAG_SKIP_IVF_DATA | faiss::IO_FLAG_READ_ONLY));
  } catch (const std::exception& e) {
    throw Error(ErrorCode::Format, "on-disk index " + path + " cannot be read by faiss: " + faiss_error(e));
  }
  faiss::Index* raw = owned.get();
  const faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(raw);
  auto* od = ivf ? dynamic_cast<faiss::OnDiskInvertedLists*>(ivf->invlists) : nullptr;
  if (!od) throw Error(ErrorCode::Format, "on-disk index " + path + " does not hold memory-mapped inverted lists");
  const auto lists_size = fs::file_size(lists, ec);
  if (ec || lists_size != od->totsize)
    throw Error(ErrorCode::Format, "inverted lists " + lists + " have " + std::to_string(lists_size) + " bytes, the index expects " +
                                       std::to_string(od->totsize));
  od->filename = lists;
  od->read_only = true;
  try {
    od->do_mmap();
  } catch (const std::exception& e) {
    throw Error(ErrorCode::Io, "cannot map inverted lists " + lists + ": " + faiss_error(e));
  }
  if (raw->d != dim || raw->ntotal != expected_ntotal)
    throw Error(ErrorCode::Format, "on-disk index " + path + " holds " + std::to_string(raw->ntotal) + " vectors of dim " +
                                       std::to_string(raw->d) + ", the catalog " + std::to_string(expected_ntotal) + " of dim " +
                                       std::to_string(dim));
  return std::make_unique<CatalogLabelledIndex>(owned.release());
}

std::vector<int64_t> stored_ids(const faiss::IndexIDMap2& index) {
  if (!index.id_map.empty() || index.ntotal == 0) return {index.id_map.begin(), index.id_map.end()};
  std::vector<int64_t> out;
  const faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(index.index);
  if (!ivf) return out;
  out.reserve(static_cast<size_t>(index.ntotal));
  for (size_t l = 0; l < ivf->nlist; ++l) {
    const size_t n = ivf->invlists->list_size(l);
    if (n == 0) continue;
    faiss::InvertedLists::ScopedIds ids(ivf->invlists, l);
    out.insert(out.end(), ids.get(), ids.get() + n);
  }
  return out;
}

std::string ExactVectors::header(int dim, int64_t count, int64_t first_id) {
  std::string h(kExactHeader, '\0');
  char* p = h.data();
  std::memcpy(p, kExactMagic, 8);
  const uint32_t d = static_cast<uint32_t>(dim), pad = 0;
  std::memcpy(p + 8, &d, 4);
  std::memcpy(p + 12, &pad, 4);
  std::memcpy(p + 16, &count, 8);
  std::memcpy(p + 24, &first_id, 8);
  return h;
}

std::shared_ptr<const ExactVectors> ExactVectors::open_if_present(const std::string& dir, int dim, int64_t count) {
  const std::string path = (fs::path(dir) / kExactVectorsName).string();
  std::error_code ec;
  if (!fs::exists(path, ec)) return nullptr;
  auto out = std::make_shared<ExactVectors>();
  out->file_ = MappedFile::open(path);
  const uint8_t* p = out->file_->data();
  const size_t size = out->file_->size();
  if (size < kExactHeader || std::memcmp(p, kExactMagic, 8) != 0)
    throw Error(ErrorCode::Format, "exact vector file " + path + " is not a clipkit vector file (bad header)");
  uint32_t d = 0;
  int64_t n = 0, first = 0;
  std::memcpy(&d, p + 8, 4);
  std::memcpy(&n, p + 16, 8);
  std::memcpy(&first, p + 24, 8);
  if (static_cast<int>(d) != dim || n != count || first < 1 ||
      size != kExactHeader + static_cast<uint64_t>(n) * static_cast<uint64_t>(d) * sizeof(float))
    throw Error(ErrorCode::Format, "exact vector file " + path + " holds " + std::to_string(n) + " vectors of dim " + std::to_string(d) +
                                       " in " + std::to_string(size) + " bytes; the catalog has " + std::to_string(count) +
                                       " of dim " + std::to_string(dim));
  out->rows_ = reinterpret_cast<const float*>(p + kExactHeader);
  out->dim_ = dim;
  out->count_ = n;
  out->first_id_ = first;
  return out;
}

const float* ExactVectors::row(int64_t id) const {
  if (id < first_id_ || id - first_id_ >= count_) return nullptr;
  return rows_ + (id - first_id_) * dim_;
}

}  // namespace clipkit::search
