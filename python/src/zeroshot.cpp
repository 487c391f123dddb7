// clipkit.ZeroShotClassifier, the built-in template and label sets, and clipkit.evaluate (the
// flow of `clipkit eval`, returning its JSON report).
#include <filesystem>
#include <map>
#include <sstream>

#include "bindings.h"
#include "clipkit/error.h"
#include "clipkit/zeroshot.h"
#include "zeroshot/report.h"

namespace clipkit::python {

namespace {

struct PyClassifier {
  ZeroShotClassifier clf;
  std::shared_ptr<Model> model;  // may be null for a classifier loaded without one
};

// labels: a built-in label set name, a label file, "a,b|c" (comma list, '|' for synonyms), or a
// list whose items are a name or a list of synonyms.
std::vector<ClassSpec> resolve_labels(py::handle labels, std::vector<std::string>* default_templates) {
  *default_templates = builtin_template_set("photo");
  if (py::isinstance<py::str>(labels) || py::hasattr(labels, "__fspath__")) {
    std::string s;
    as_path(labels, &s);
    if (py::isinstance<py::str>(labels)) {
      for (const auto& name : builtin_label_set_names())
        if (name == s) {
          *default_templates = builtin_label_set_templates(name);
          return builtin_label_set(name);
        }
    }
    std::error_code ec;
    if (std::filesystem::is_regular_file(s, ec)) return read_label_file(s);
    if (!py::isinstance<py::str>(labels)) return read_label_file(s);  // a PathLike: the engine names what is wrong
    return parse_label_list(s);
  }
  if (!py::isinstance<py::list>(labels) && !py::isinstance<py::tuple>(labels))
    throw py::type_error("labels: expected a list of class names, a label set name, a label file or 'a,b,c', got " +
                         type_name(labels));
  std::vector<ClassSpec> out;
  size_t i = 0;
  for (auto item : labels) {
    const std::string what = "labels[" + std::to_string(i++) + "]";
    ClassSpec c;
    if (py::isinstance<py::str>(item))
      c.names = {item.cast<std::string>()};
    else if (py::isinstance<py::list>(item) || py::isinstance<py::tuple>(item))
      c.names = string_list(item, what);
    else
      throw py::type_error(what + ": expected a class name (str) or a list of synonyms, got " + type_name(item));
    if (c.names.empty() || c.names.front().empty()) throw py::value_error(what + ": empty class name");
    out.push_back(std::move(c));
  }
  if (out.empty()) throw py::value_error("labels: no classes given");
  return out;
}

// Embeddings [n, dim] from either float32 embeddings or images encoded with the model.
Embeddings rows_of(const PyClassifier& self, py::handle x, const std::string& what) {
  if (py::isinstance<py::array>(x)) {
    auto arr = py::reinterpret_borrow<py::array>(x);
    const char kind = arr.dtype().kind();
    if (kind == 'f' || kind == 'c') {
      if (!arr.dtype().is(py::dtype::of<float>()))
        throw py::type_error(what + ": embeddings must be float32, got dtype " + py::str(arr.dtype()).cast<std::string>());
      const int64_t dim = self.clf.dim();
      const bool one = arr.ndim() == 1;
      if ((arr.ndim() != 1 && arr.ndim() != 2) || arr.shape(arr.ndim() - 1) != dim)
        throw py::value_error(what + ": expected embeddings of shape [n, " + std::to_string(dim) + "] or [" +
                              std::to_string(dim) + "], got " + py::str(arr.attr("shape")).cast<std::string>());
      auto c = py::array_t<float, py::array::c_style>::ensure(arr);
      Embeddings e(one ? 1 : arr.shape(0), dim);
      std::copy(c.data(), c.data() + c.size(), e.data.begin());
      return e;
    }
  }
  if (!self.model)
    throw py::value_error(what + ": this classifier has no model to encode images with (load it with a model, or pass embeddings)");
  py::array_t<float> enc = encode_images(*self.model, x, true, 16, what);
  Embeddings e(enc.shape(0), enc.shape(1));
  std::copy(enc.data(), enc.data() + enc.size(), e.data.begin());
  return e;
}

float scale_of(const PyClassifier& self, py::handle scale) {
  if (scale.is_none()) return self.clf.model_logit_scale();
  if (!py::isinstance<py::float_>(scale) && !py::isinstance<py::int_>(scale))
    throw py::type_error("scale: expected a number or None, got " + type_name(scale));
  const float s = scale.cast<float>();
  if (!(s > 0.0f)) throw py::value_error("scale: must be positive");
  return s;
}

py::dict evaluate_folder(py::handle model_obj, const std::string& folder, py::handle strategies_obj, float scale,
                         int batch_size, py::handle select_from, int max_templates, double holdout) {
  const std::shared_ptr<Model> model = model_arg(model_obj, "model");
  if (!(scale > 0.0f)) throw py::value_error("scale: must be positive");
  if (batch_size < 1) throw py::value_error("batch_size: must be at least 1");
  std::vector<std::string> names;
  if (py::isinstance<py::str>(strategies_obj)) {
    std::stringstream ss(strategies_obj.cast<std::string>());
    std::string item;
    while (std::getline(ss, item, ','))
      if (!item.empty()) names.push_back(item);
  } else {
    names = string_list(strategies_obj, "strategies");
  }
  const bool select = !select_from.is_none();
  std::string pool_name;
  if (select) {
    if (!py::isinstance<py::str>(select_from)) throw py::type_error("select_from: expected a template set name or file");
    pool_name = select_from.cast<std::string>();
    if (max_templates < 1) throw py::value_error("max_templates: must be at least 1");
    if (!(holdout > 0.0 && holdout < 1.0)) throw py::value_error("holdout: must be between 0 and 1 (exclusive)");
  }
  if (names.empty() && !select) throw py::value_error("strategies: no strategy given");

  std::string json;
  prepare_to_decode_files();
  {
    py::gil_scoped_release nogil;
    const LabeledFolder ds = read_labeled_folder(folder);
    std::vector<std::pair<std::string, std::vector<std::string>>> strategies;
    for (const auto& s : names) strategies.emplace_back(s, resolve_templates(s));
    std::vector<std::string> pool;
    if (select) pool = resolve_templates(pool_name);
    const EncodedImages enc = encode_image_paths(*model, ds.images, batch_size);
    if (enc.paths.empty()) throw Error(ErrorCode::Format, "none of the dataset's images could be read");
    const std::vector<int> truth = encoded_truth(ds, enc);
    // Prompt embeddings are shared by the strategies and the selection pool.
    const TextEncoder cached = caching_text_encoder(*model);

    EvalReport report;
    report.model = model->info().path;
    report.dataset = folder;
    for (const auto& c : ds.classes) report.labels.push_back(c.label());
    report.class_counts.assign(ds.classes.size(), 0);
    for (int t : truth) report.class_counts[static_cast<size_t>(t)]++;
    report.images = static_cast<int64_t>(enc.paths.size());
    report.failed_images = static_cast<int64_t>(enc.failures.size());
    report.scale = scale;
    report.image_paths = enc.paths;
    for (const auto& [name, templates] : strategies) {
      ClassifierOptions opt;
      opt.templates = templates;
      const auto clf = ZeroShotClassifier::build(cached, ds.classes, opt, model->info().fingerprint, model->logit_scale());
      report.strategies.push_back({name, templates, evaluate(clf, enc.embeddings, truth, scale)});
    }
    if (select) {
      const auto split = stratified_split(truth, static_cast<int>(ds.classes.size()), holdout);
      SelectionReport sel;
      sel.pool_name = pool_name;
      sel.pool_size = pool.size();
      sel.holdout = holdout;
      sel.result = select_templates(cached, ds.classes, pool, enc.embeddings, truth, split, max_templates, scale);
      report.selection = std::move(sel);
    }
    json = render_eval_json(report);
  }
  return py::module_::import("json").attr("loads")(json);
}

}  // namespace

void register_zeroshot(py::module_& m) {
  py::class_<PyClassifier, std::shared_ptr<PyClassifier>> cls(m, "ZeroShotClassifier", R"doc(
A zero-shot classifier: one unit vector per class, the normalised mean of the normalised text
embeddings of every template filled with every name of the class (CLIP's prompt ensembling).

    clf = clipkit.ZeroShotClassifier(model, ["cat", "dog"], templates="imagenet80")
    clf.classify("pet.jpg", top_k=2)     # [[("cat", 0.93), ("dog", 0.07)]]
)doc");
  cls.def(py::init([](py::object model, py::object labels, py::object templates, int batch_size) {
            auto self = std::make_shared<PyClassifier>();
            self->model = model_arg(model, "model");
            std::vector<std::string> default_templates;
            const std::vector<ClassSpec> classes = resolve_labels(labels, &default_templates);
            ClassifierOptions opt;
            if (batch_size < 1) throw py::value_error("batch_size: must be at least 1");
            opt.batch_size = batch_size;
            if (templates.is_none()) {
              opt.templates = default_templates;
            } else if (py::isinstance<py::str>(templates) || py::hasattr(templates, "__fspath__")) {
              std::string s;
              as_path(templates, &s);
              opt.templates = resolve_templates(s);
            } else {
              opt.templates = string_list(templates, "templates");
              if (opt.templates.empty()) throw py::value_error("templates: no templates given");
              for (size_t i = 0; i < opt.templates.size(); ++i)
                check_template(opt.templates[i], "templates[" + std::to_string(i) + "]");
            }
            py::gil_scoped_release nogil;
            self->clf = ZeroShotClassifier::build(*self->model, classes, opt);
            return self;
          }),
          py::arg("model"), py::arg("labels"), py::arg("templates") = py::none(), py::arg("batch_size") = 256, R"doc(
Builds a classifier by encoding every prompt with ``model``.

``labels``: a list of class names (an item may be a list of synonyms, averaged into one class),
the name of a built-in label set (see :func:`clipkit.label_sets`), a label file (one class per
line, '|' between synonyms, or JSON), or a comma-separated string ``"cat,dog|puppy"``.
``templates``: a built-in template set name (see :func:`clipkit.template_sets`), a template file
(one per line), or a list of templates with one ``{}`` each. None (default): the built-in label
set's own templates, else the ``photo`` set ("a photo of a {}.").
)doc");
  cls.def_static(
      "load",
      [](const std::string& path, py::object model) {
        auto self = std::make_shared<PyClassifier>();
        if (!model.is_none()) self->model = model_arg(model, "model");
        const std::string fp = self->model ? self->model->info().fingerprint : "";
        const std::string name = self->model ? model_name_of(*self->model) : "";
        py::gil_scoped_release nogil;
        self->clf = ZeroShotClassifier::load(path, fp, name);
        return self;
      },
      py::arg("path"), py::arg("model") = py::none(), R"doc(
Loads a classifier saved with :meth:`save` (a ``.clf`` file). With a model, a classifier built
for another model raises clipkit.Error naming both models and their fingerprints; without one, only embeddings
can be classified.
)doc");
  cls.def(
      "save",
      [](const PyClassifier& self, const std::string& path) {
        py::gil_scoped_release nogil;
        self.clf.save(path);
      },
      py::arg("path"), "Writes the classifier to ``path`` (a ``.clf`` file: safetensors with labels and templates).");
  cls.def(
      "probs",
      [](const PyClassifier& self, py::object x, py::object scale) {
        const float s = scale_of(self, scale);
        const Embeddings rows = rows_of(self, x, "images_or_embeddings");
        const int64_t c = self.clf.num_classes();
        std::vector<float> out(static_cast<size_t>(rows.rows * c));
        {
          py::gil_scoped_release nogil;
          const auto preds = self.clf.classify(rows, s, 1);
          for (size_t i = 0; i < preds.size(); ++i)
            std::copy(preds[i].probs.begin(), preds[i].probs.end(), out.begin() + static_cast<std::ptrdiff_t>(i * c));
        }
        return to_numpy(std::move(out), {static_cast<py::ssize_t>(rows.rows), static_cast<py::ssize_t>(c)});
      },
      py::arg("images_or_embeddings"), py::arg("scale") = py::none(), R"doc(
Class probabilities: float32 [n, classes], softmax of ``scale`` × cosine(image, class).

The input is images (anything :meth:`Model.encode_image` takes) or float32 embeddings [n, dim]
(or one [dim]). ``scale`` defaults to the model's learned logit scale; the CLIP paper's
notebook uses 100.
)doc");
  cls.def(
      "classify",
      [](const PyClassifier& self, py::object x, int top_k, py::object scale) {
        if (top_k < 1) throw py::value_error("top_k: must be at least 1");
        const float s = scale_of(self, scale);
        const Embeddings rows = rows_of(self, x, "images_or_embeddings");
        std::vector<Prediction> preds;
        {
          py::gil_scoped_release nogil;
          preds = self.clf.classify(rows, s, top_k);
        }
        py::list out;
        for (const auto& p : preds) {
          py::list top;
          for (const auto& t : p.top) top.append(py::make_tuple(t.label, static_cast<double>(t.prob)));
          out.append(top);
        }
        return out;
      },
      py::arg("images_or_embeddings"), py::arg("top_k") = 5, py::arg("scale") = py::none(), R"doc(
The ``top_k`` best classes per image: a list (one per image) of ``(label, probability)`` pairs,
best first. Inputs and ``scale`` as for :meth:`probs`.
)doc");
  cls.def_property_readonly("labels", [](const PyClassifier& self) { return self.clf.labels(); },
                            "Display label of each class (its first name), in class order.");
  cls.def_property_readonly("templates", [](const PyClassifier& self) { return self.clf.templates(); },
                            "The default templates the classifier was built with.");
  cls.def_property_readonly("num_classes", [](const PyClassifier& self) { return self.clf.num_classes(); },
                            "Number of classes.");
  cls.def_property_readonly("dim", [](const PyClassifier& self) { return self.clf.dim(); }, "Embedding length.");
  cls.def_property_readonly("fingerprint", [](const PyClassifier& self) { return self.clf.model_fingerprint(); },
                            "Fingerprint of the model the classifier was built with.");
  cls.def_property_readonly("model_name", [](const PyClassifier& self) { return self.clf.model_name(); },
                            "Name or path of that model as it was loaded ('' when the file does not record it).");
  cls.def_property_readonly("logit_scale", [](const PyClassifier& self) { return self.clf.model_logit_scale(); },
                            "The logit scale of that model (the default ``scale``).");
  cls.def_property_readonly(
      "class_embeddings",
      [](const PyClassifier& self) {
        Embeddings e = self.clf.class_embeddings();
        return to_numpy(std::move(e));
      },
      "The class vectors: float32 [classes, dim], unit rows (a copy).");
  cls.def_property_readonly("model", [](const PyClassifier& self) { return self.model; },
                            "The model used for image inputs (None when loaded without one).");
  cls.def("__repr__", [](const PyClassifier& self) {
    return "<clipkit.ZeroShotClassifier classes=" + std::to_string(self.clf.num_classes()) +
           " templates=" + std::to_string(self.clf.templates().size()) + ">";
  });

  m.def(
      "template_sets",
      [] {
        py::dict out;
        for (const auto& name : builtin_template_set_names()) out[py::str(name)] = builtin_template_set(name);
        return out;
      },
      R"doc(The built-in template sets: a dict {name: [templates]} (none, photo, imagenet80, imagenet7, ...).)doc");
  m.def(
      "label_sets",
      [] {
        py::dict out;
        for (const auto& name : builtin_label_set_names()) {
          py::list labels;
          for (const auto& c : builtin_label_set(name)) labels.append(c.label());
          out[py::str(name)] = labels;
        }
        return out;
      },
      R"doc(The built-in label sets: a dict {name: [class labels]} (imagenet1000, patterns, cifar10, ...).)doc");
  m.def(
      "_evaluate",
      [](py::object model, const std::string& folder, py::object strategies, float scale, int batch_size,
         py::object select_from, int max_templates, double holdout) {
        return evaluate_folder(model, folder, strategies, scale, batch_size, select_from, max_templates, holdout);
      },
      py::arg("model"), py::arg("folder"), py::arg("strategies"), py::arg("scale"), py::arg("batch_size"),
      py::arg("select_from"), py::arg("max_templates"), py::arg("holdout"), "See clipkit.evaluate.");
}

}  // namespace clipkit::python
