// clipkit.Index: an image search index (faiss vectors + SQLite catalog) and its search hits.
#include <cmath>
#include <limits>
#include <mutex>
#include <optional>

#include "bindings.h"
#include "clipkit/error.h"
#include "clipkit/index.h"
#include "clipkit/search_request.h"

namespace clipkit::python {

namespace {

// One result, with the fields of `clipkit search --format json`.
struct Hit {
  int rank = 0;
  int64_t id = 0;
  std::string path;
  double score = 0;
  std::vector<std::string> paths;
  std::string sha256;
  int64_t size = 0;
  int width = 0, height = 0;
  std::optional<double> mtime;
  double added = 0;
  std::vector<std::string> tags;
  std::string meta = "{}";  // the path's metadata, a JSON object
};

Hit hit_of(const SearchHit& h) {
  Hit o;
  o.rank = h.rank;
  o.id = h.item.id;
  o.path = h.path;
  o.score = h.score;
  o.paths = h.item.paths;
  o.sha256 = h.item.sha256;
  o.size = h.item.size;
  o.width = h.item.width;
  o.height = h.item.height;
  for (size_t i = 0; i < h.item.paths.size() && i < h.item.mtimes_ns.size(); ++i)
    if (h.item.paths[i] == h.path) o.mtime = static_cast<double>(h.item.mtimes_ns[i]) / 1e9;
  o.added = h.item.added;
  o.tags = h.item.tags;
  if (!h.meta.empty()) o.meta = h.meta;
  return o;
}

py::dict hit_dict(const Hit& h) {
  py::dict d;
  d["rank"] = h.rank;
  d["id"] = h.id;
  d["path"] = h.path;
  d["score"] = h.score;
  d["paths"] = h.paths;
  d["sha256"] = h.sha256;
  d["size"] = h.size;
  d["width"] = h.width;
  d["height"] = h.height;
  if (h.mtime) d["mtime"] = *h.mtime;
  d["added"] = h.added;
  d["tags"] = h.tags;
  d["meta"] = py::module_::import("json").attr("loads")(h.meta);
  return d;
}

py::dict info_dict(const IndexInfo& i) {
  py::dict d;
  d["dir"] = i.dir;
  d["model_path"] = i.model_path;
  d["model_fingerprint"] = i.model_fingerprint;
  d["dim"] = i.dim;
  d["kind"] = i.kind;
  d["structure"] = i.structure;
  d["trained"] = i.trained;
  d["train_min"] = i.train_min;
  d["items"] = i.items;
  d["files"] = i.files;
  d["generation"] = i.generation;
  d["created"] = i.created;
  return d;
}

// The index, the model that embeds for it (given, or loaded from the recorded path on first use)
// and a lock: the engine's Index is used by one thread at a time.
class PyIndex {
 public:
  PyIndex(Index index, std::shared_ptr<Model> model) : index_(std::move(index)), model_(std::move(model)) {}

  Index& index() {
    if (!index_) throw py::value_error("this index is closed");
    return *index_;
  }
  std::mutex& mutex() { return mu_; }

  // Needs the lock held.
  const Model& model() {
    if (!model_) {
      const IndexInfo i = index().info();
      if (i.model_path.empty())
        throw Error(ErrorCode::InvalidArgument, "index " + i.dir + " records no model path; open it with a model");
      try {
        model_ = Model::load(i.model_path);
      } catch (const Error& e) {
        throw Error(e.code(), std::string(e.what()) + " (the model recorded in index " + i.dir +
                                  "; open it with model= to use another copy)");
      }
      index().check_model(*model_);
    }
    return *model_;
  }
  std::shared_ptr<Model> model_if_loaded() const { return model_; }
  void close() { index_.reset(); }
  bool closed() const { return !index_; }

 private:
  std::optional<Index> index_;
  std::shared_ptr<Model> model_;
  std::mutex mu_;
};

// Runs f(index) with the GIL released and the index locked.
template <class F>
auto locked(PyIndex& self, F&& f) {
  py::gil_scoped_release nogil;
  std::lock_guard<std::mutex> lock(self.mutex());
  return f(self);
}

std::vector<float> vector_arg(py::handle obj, int dim, const std::string& what) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(what + ": expected a float32 numpy array [" + std::to_string(dim) + "], got " + type_name(obj));
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().is(py::dtype::of<float>()))
    throw py::type_error(what + ": expected a float32 array, got dtype " + py::str(arr.dtype()).cast<std::string>());
  if (arr.ndim() != 1 || arr.shape(0) != dim)
    throw py::value_error(what + ": expected shape [" + std::to_string(dim) + "], got " +
                          py::str(arr.attr("shape")).cast<std::string>());
  auto c = py::array_t<float, py::array::c_style>::ensure(arr);
  return std::vector<float>(c.data(), c.data() + c.size());
}

py::list search(PyIndex& self, py::handle text, py::handle image, py::handle like, py::handle vector, int k,
                py::handle min_score, py::handle tags, py::handle path_prefix, py::handle query, py::handle templates) {
  if (self.closed()) throw py::value_error("this index is closed");
  if (k < 1) throw py::value_error("k: must be at least 1, got " + std::to_string(k));
  SearchRequest r;
  if (!query.is_none()) {
    if (!py::isinstance<py::str>(query)) throw py::type_error("query: expected a str, got " + type_name(query));
    r.expression = query.cast<std::string>();
  }
  if (!text.is_none()) r.texts = string_list(text, "text");
  std::vector<py::object> image_items;  // in-memory images: embedded here, added as vector terms
  if (!image.is_none()) {
    std::string p;
    if (as_path(image, &p)) {
      r.images.push_back(p);
    } else if (is_single_image(image)) {
      image_items.push_back(py::reinterpret_borrow<py::object>(image));
    } else if (py::isinstance<py::list>(image) || py::isinstance<py::tuple>(image)) {
      for (auto item : image) {
        if (as_path(item, &p))
          r.images.push_back(p);
        else
          image_items.push_back(py::reinterpret_borrow<py::object>(item));
      }
    } else {
      throw py::type_error("image: expected a file path, a PIL.Image.Image or a uint8 numpy array, got " + type_name(image));
    }
  }
  if (!like.is_none()) {
    auto add_like = [&](py::handle item, const std::string& what) {
      std::string p;
      if (py::isinstance<py::int_>(item) && !py::isinstance<py::bool_>(item))
        r.likes.push_back("#" + std::to_string(item.cast<int64_t>()));
      else if (as_path(item, &p))
        r.likes.push_back(p);
      else
        throw py::type_error(what + ": expected an indexed path or an item id (int), got " + type_name(item));
    };
    if (py::isinstance<py::list>(like) || py::isinstance<py::tuple>(like)) {
      size_t i = 0;
      for (auto item : like) add_like(item, "like[" + std::to_string(i++) + "]");
    } else {
      add_like(like, "like");
    }
  }
  if (!templates.is_none()) {
    if (!py::isinstance<py::str>(templates))
      throw py::type_error("templates: expected a template set name or file, got " + type_name(templates));
    r.templates = templates.cast<std::string>();
  }
  if (!min_score.is_none()) {
    if (!py::isinstance<py::float_>(min_score) && !py::isinstance<py::int_>(min_score))
      throw py::type_error("min_score: expected a number or None, got " + type_name(min_score));
    r.options.min_score = min_score.cast<float>();
  }
  r.options.k = k;
  if (!tags.is_none()) r.options.filter.tags = string_list(tags, "tags");
  if (!path_prefix.is_none()) {
    std::string p;
    if (!as_path(path_prefix, &p)) throw py::type_error("path_prefix: expected a str, got " + type_name(path_prefix));
    r.options.filter.path_prefix = p;
  }
  const int dim = locked(self, [](PyIndex& s) { return s.index().dim(); });
  std::vector<std::vector<float>> vectors;
  if (!vector.is_none()) vectors.push_back(vector_arg(vector, dim, "vector"));
  Query q = build_query(r);
  bool needs_model = !image_items.empty();
  for (const auto& t : q.terms) needs_model |= t.kind == QueryTerm::Kind::Text || t.kind == QueryTerm::Kind::Image;
  if (needs_model) locked(self, [](PyIndex& s) { s.model(); });
  if (!image_items.empty()) {
    py::list items;
    for (auto& o : image_items) items.append(o);
    py::array_t<float> e = encode_images(*self.model_if_loaded(), items, true, 16, "image");
    for (py::ssize_t i = 0; i < e.shape(0); ++i) vectors.emplace_back(e.data(i, 0), e.data(i, 0) + e.shape(1));
  }
  for (auto& v : vectors) {
    QueryTerm t;
    t.kind = QueryTerm::Kind::Vector;
    t.vector = std::move(v);
    q.terms.push_back(std::move(t));
  }
  if (q.terms.empty()) throw py::value_error("search: give a query (text, image, like, vector or query)");
  const std::vector<SearchHit> hits = locked(self, [&](PyIndex& s) {
    return s.index().search(q, needs_model ? &s.model() : nullptr, r.options);
  });
  py::list out;
  for (const auto& h : hits) out.append(py::cast(hit_of(h)));
  return out;
}

}  // namespace

void register_index(py::module_& m) {
  py::class_<Hit> hit(m, "SearchHit", R"doc(
One search result; its attributes are the fields of ``clipkit search --format json``: rank
(1-based), id, path (the first matching path), score (cosine similarity), paths (every path with
this content), sha256, size (bytes), width, height, mtime (of ``path``, unix seconds, or None),
added (unix seconds) and tags.
)doc");
  hit.def_readonly("rank", &Hit::rank, "1-based rank.")
      .def_readonly("id", &Hit::id, "Item id in the catalog.")
      .def_readonly("path", &Hit::path, "The first matching path.")
      .def_readonly("score", &Hit::score, "Cosine similarity of the query with the stored vector.")
      .def_readonly("paths", &Hit::paths, "Every indexed path holding this content, sorted.")
      .def_readonly("sha256", &Hit::sha256, "Hex SHA-256 of the file bytes.")
      .def_readonly("size", &Hit::size, "File size in bytes.")
      .def_readonly("width", &Hit::width, "Decoded image width.")
      .def_readonly("height", &Hit::height, "Decoded image height.")
      .def_readonly("mtime", &Hit::mtime, "Modification time of ``path`` (unix seconds), or None.")
      .def_readonly("added", &Hit::added, "When the content was first indexed (unix seconds).")
      .def_readonly("tags", &Hit::tags, "Tags of the item's paths, sorted.")
      .def_property_readonly(
          "meta", [](const Hit& h) { return py::module_::import("json").attr("loads")(h.meta); },
          "Metadata of ``path`` (a dict; empty when none).")
      .def("to_dict", &hit_dict, "The hit as a dict (the JSON object `clipkit search --format json` prints).")
      .def("__repr__", [](const Hit& h) {
        char score[32];
        std::snprintf(score, sizeof score, "%.4f", h.score);
        return "<clipkit.SearchHit rank=" + std::to_string(h.rank) + " score=" + score + " path='" + h.path + "'>";
      });

  py::class_<PyIndex, std::shared_ptr<PyIndex>> cls(m, "Index", R"doc(
An image search index: a folder holding a SQLite catalog (every vector with its paths, sizes,
hashes and tags) and a faiss structure built from it.

    idx = clipkit.Index.create("photos.idx", model)
    idx.add(["Pictures"], recursive=True)
    for hit in idx.search(text="a red bicycle", k=5):
        print(hit.score, hit.path)

Methods release the GIL; one index object may be shared between threads (calls take turns).
Opening for writing locks the folder until :meth:`close` (or the end of a ``with`` block).
)doc");
  cls.def_static(
      "create",
      [](const std::string& dir, py::object model, const std::string& kind, int64_t train_min) {
        std::shared_ptr<Model> mod = model_arg(model, "model");
        if (train_min < 0) throw py::value_error("train_min: must be >= 0");
        IndexCreateOptions o;
        o.kind = kind;
        o.train_min = train_min;
        py::gil_scoped_release nogil;
        Index idx = Index::create(dir, mod->info(), o);
        return std::make_shared<PyIndex>(std::move(idx), mod);
      },
      py::arg("dir"), py::arg("model"), py::arg("kind") = "flat", py::arg("train_min") = 0, R"doc(
Creates an empty index in folder ``dir`` for ``model`` and opens it for writing.

``kind``: ``flat`` (exact, default), ``hnsw``, ``ivfpq`` or a faiss factory string such as
``"IVF256,PQ32"``. Kinds that need training stay exact until ``train_min`` vectors are stored
(0 = automatic).
)doc");
  cls.def_static(
      "open",
      [](const std::string& dir, py::object model, bool read_only) {
        std::shared_ptr<Model> mod;
        if (!model.is_none()) mod = model_arg(model, "model");
        py::gil_scoped_release nogil;
        Index idx = Index::open(dir, read_only ? Index::Mode::ReadOnly : Index::Mode::ReadWrite);
        if (mod) idx.check_model(*mod);
        return std::make_shared<PyIndex>(std::move(idx), mod);
      },
      py::arg("dir"), py::arg("model") = py::none(), py::arg("read_only") = false, R"doc(
Opens an existing index. Without ``model`` the model recorded in the index is loaded the first
time one is needed (adding files, text or image queries); a model built differently raises
clipkit.Error. ``read_only`` opens without taking the writer's lock (searching only).
)doc");
  cls.def(
      "add",
      [](PyIndex& self, py::object paths, bool recursive, py::object tags, int batch, int threads) {
        const std::vector<std::string> list = path_list(paths, "paths");
        if (batch < 1) throw py::value_error("batch: must be at least 1");
        if (threads < 0) throw py::value_error("threads: must be >= 0");
        AddOptions o;
        o.recursive = recursive;
        o.tags = tags.is_none() ? std::vector<std::string>{} : string_list(tags, "tags");
        o.batch = batch;
        o.threads = threads;
        prepare_to_decode_files();
        const AddReport r = locked(self, [&](PyIndex& s) { return s.index().add_files(list, s.model(), o); });
        py::dict d;
        d["candidates"] = r.candidates;
        d["added"] = r.added;
        d["updated"] = r.updated;
        d["duplicates"] = r.duplicates;
        d["skipped"] = r.skipped;
        d["failed"] = r.failed;
        py::list failures;
        for (const auto& f : r.failures) {
          py::dict fd;
          fd["path"] = f.path;
          fd["reason"] = f.reason;
          failures.append(fd);
        }
        d["failures"] = failures;
        return d;
      },
      py::arg("paths"), py::arg("recursive") = false, py::arg("tags") = py::tuple(), py::arg("batch") = 32,
      py::arg("threads") = 0, R"doc(
Embeds and adds image files and folders (inside folders: jpg, jpeg, png, webp, bmp, gif).
A changed file is re-embedded, an unchanged one skipped, a copy of indexed content stored once.
Returns the report as a dict: candidates, added, updated, duplicates, skipped, failed and
failures (a list of {"path", "reason"}: unreadable files are reported, never raised).
)doc");
  cls.def(
      "remove",
      [](PyIndex& self, py::object paths) {
        const std::vector<std::string> list = path_list(paths, "paths");
        return locked(self, [&](PyIndex& s) { return s.index().remove_paths(list); });
      },
      py::arg("paths"), R"doc(
Removes indexed paths (files, or every path under a folder); returns how many were removed.
A content whose last path goes away loses its vector.
)doc");
  cls.def(
      "search",
      [](PyIndex& self, py::object text, py::object image, py::object like, py::object vector, int k,
         py::object min_score, py::object tags, py::object path_prefix, py::object query, py::object templates) {
        return search(self, text, image, like, vector, k, min_score, tags, path_prefix, query, templates);
      },
      py::arg("text") = py::none(), py::arg("image") = py::none(), py::arg("like") = py::none(),
      py::arg("vector") = py::none(), py::arg("k") = 20, py::arg("min_score") = py::none(), py::arg("tags") = py::tuple(),
      py::arg("path_prefix") = py::none(), py::arg("query") = py::none(), py::arg("templates") = py::none(), R"doc(
Searches the index; returns a list of :class:`SearchHit`, best first.

The query is the normalised sum of the unit vectors of every term given: ``text`` (a str or a
list), ``image`` (a file, PIL image or uint8 array, or a list), ``like`` (an indexed path or an
item id: more like it, excluding itself and its duplicates), ``vector`` (float32 [dim]) and
``query`` (the expression syntax of ``clipkit search --query``, e.g.
``"image:a.jpg + 0.5*text:in red - text:indoors"``). ``templates`` (a template set name or file)
turns each text into the mean of its filled templates. Filters: ``k`` results at most,
``min_score`` (cosine), ``tags`` (every one required), ``path_prefix`` (absolute, as stored).
)doc");
  cls.def_property_readonly(
      "info",
      [](PyIndex& self) {
        const IndexInfo i = locked(self, [](PyIndex& s) { return s.index().info(); });
        return info_dict(i);
      },
      "What the index holds, as a dict (the fields of ``clipkit index info --format json``).");
  cls.def(
      "verify",
      [](PyIndex& self, bool deep) {
        const VerifyReport r = locked(self, [&](PyIndex& s) { return s.index().verify(deep); });
        py::dict d;
        d["ok"] = r.ok;
        d["problems"] = r.problems;
        d["notes"] = r.notes;
        d["items"] = r.items;
        d["files"] = r.files;
        d["vectors"] = r.vectors;
        d["hashed"] = r.hashed;
        return d;
      },
      py::arg("deep") = false, R"doc(
Checks that the catalog and the vectors agree (``deep`` also re-hashes the files still on
disk). Returns a dict: ok, problems and notes (lists of lines), items, files, vectors, hashed.
)doc");
  cls.def(
      "rebuild",
      [](PyIndex& self, const std::string& kind, int64_t train_min) {
        if (train_min < 0) throw py::value_error("train_min: must be >= 0");
        locked(self, [&](PyIndex& s) { s.index().rebuild(kind, train_min); });
      },
      py::arg("kind"), py::arg("train_min") = 0,
      "Converts the faiss structure to another kind from the stored vectors (nothing is re-embedded).");
  cls.def_property_readonly(
      "notes", [](PyIndex& self) { return locked(self, [](PyIndex& s) { return s.index().open_notes(); }); },
      "Notes gathered when the index was opened (e.g. a stale vector cache brought up to date).");
  cls.def_property_readonly(
      "model",
      [](PyIndex& self) {
        locked(self, [](PyIndex& s) { s.model(); });
        return self.model_if_loaded();
      },
      "The model that embeds for this index (loaded from the recorded path on first use).");
  cls.def(
      "close", [](PyIndex& self) { locked(self, [](PyIndex& s) { s.close(); }); },
      "Closes the index (releasing the writer's lock); further calls raise ValueError.");
  cls.def("__enter__", [](std::shared_ptr<PyIndex> self) { return self; });
  cls.def("__exit__", [](PyIndex& self, py::args) { locked(self, [](PyIndex& s) { s.close(); }); });
  cls.def("__len__", [](PyIndex& self) { return locked(self, [](PyIndex& s) { return s.index().info().items; }); },
          "Number of unique contents (vectors).");
  cls.def("__repr__", [](PyIndex& self) {
    if (self.closed()) return std::string("<clipkit.Index (closed)>");
    const IndexInfo i = locked(self, [](PyIndex& s) { return s.index().info(); });
    return "<clipkit.Index '" + i.dir + "' kind=" + i.kind + " items=" + std::to_string(i.items) + ">";
  });
}

}  // namespace clipkit::python
