// Template sets, label sets and their text/JSON file formats.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "core/json_limits.h"
#include "clipkit/zeroshot.h"
#include "core/mapped_file.h"
#include "zeroshot/builtin_data.h"

namespace clipkit {
namespace {

using nlohmann::json;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

// Lower-case aliases of the prompts.json dataset names.
const std::vector<std::pair<std::string, std::string>>& dataset_aliases() {
  static const std::vector<std::pair<std::string, std::string>> a = {
      {"birdsnap", "Birdsnap"},
      {"cifar10", "CIFAR10"},
      {"cifar100", "CIFAR100"},
      {"clevr_counts", "CLEVRCounts"},
      {"caltech101", "Caltech101"},
      {"country211", "Country211"},
      {"dtd", "DescribableTextures"},
      {"eurosat", "EuroSAT"},
      {"fgvc_aircraft", "FGVCAircraft"},
      {"fer2013", "FacialEmotionRecognition2013"},
      {"flowers102", "Flowers102"},
      {"food101", "Food101"},
      {"gtsrb", "GTSRB"},
      {"hateful_memes", "HatefulMemes"},
      {"kitti", "KITTI"},
      {"kinetics700", "Kinetics700"},
      {"mnist", "MNIST"},
      {"oxford_pets", "OxfordPets"},
      {"pascal_voc2007", "PascalVOC2007"},
      {"patch_camelyon", "PatchCamelyon"},
      {"resisc45", "RESISC45"},
      {"sst2", "SST2"},
      {"stl10", "STL10"},
      {"sun397", "SUN397"},
      {"stanford_cars", "StanfordCars"},
      {"ucf101", "UCF101"},
  };
  return a;
}

struct BuiltinData {
  std::map<std::string, std::vector<std::string>> templates;         // by alias
  std::map<std::string, std::vector<ClassSpec>> labels;              // by alias
  std::map<std::string, std::vector<std::string>> label_templates;   // default templates per label set
  std::vector<std::string> template_order, label_order;
};

std::vector<std::string> json_strings(const json& j) {
  std::vector<std::string> out;
  for (const auto& x : j) out.push_back(x.get<std::string>());
  return out;
}

const BuiltinData& builtin() {
  static const BuiltinData data = [] {
    BuiltinData d;
    auto add_t = [&](const std::string& name, std::vector<std::string> t) {
      d.templates[name] = std::move(t);
      d.template_order.push_back(name);
    };
    auto add_l = [&](const std::string& name, std::vector<ClassSpec> c, const std::string& tset) {
      d.labels[name] = std::move(c);
      d.label_templates[name] = d.templates.at(tset);
      d.label_order.push_back(name);
    };
    add_t("none", {"{}"});
    add_t("photo", {"a photo of a {}."});
    add_t("imagenet80", json_strings(json::parse(zeroshot_data::imagenet_templates_json())));
    add_t("imagenet7", json_strings(json::parse(zeroshot_data::imagenet_templates_selected_json())));
    add_t("patterns", parse_template_text(zeroshot_data::patterns_templates_txt(), "built-in patterns templates"));
    const json prompts = json::parse(zeroshot_data::prompts_json());
    for (const auto& [alias, key] : dataset_aliases()) add_t(alias, json_strings(prompts.at(key).at("templates")));

    std::vector<ClassSpec> imagenet;
    for (const auto& s : json::parse(zeroshot_data::imagenet_classes_json())) imagenet.push_back({{s.get<std::string>()}, {}});
    add_l("imagenet1000", std::move(imagenet), "imagenet80");
    add_l("patterns", parse_label_text(zeroshot_data::patterns_labels_txt(), "built-in patterns labels"), "patterns");
    for (const auto& [alias, key] : dataset_aliases()) {
      std::vector<ClassSpec> classes;
      for (const auto& c : prompts.at(key).at("classes")) {
        if (c.is_array())
          classes.push_back({json_strings(c), {}});
        else
          classes.push_back({{c.get<std::string>()}, {}});
      }
      add_l(alias, std::move(classes), alias);
    }
    return d;
  }();
  return data;
}

// Maps a user-given name (alias or original dataset key, any case) to the alias.
std::string canonical_name(const std::string& name) {
  const std::string l = lower(name);
  for (const auto& [alias, key] : dataset_aliases())
    if (l == lower(key)) return alias;
  if (l == "imagenet" || l == "imagenet-1k" || l == "imagenet1k") return "imagenet1000";
  if (l == "describable_textures") return "dtd";
  return l;
}

std::string join_names(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

bool looks_like_json(std::string_view text, const std::string& source) {
  if (source.size() >= 5 && lower(source.substr(source.size() - 5)) == ".json") return true;
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    return c == '[' || c == '{';
  }
  return false;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.emplace_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

// "a|b|c" → names; empty names are an error.
ClassSpec parse_class_names(std::string_view text, const std::string& where) {
  ClassSpec c;
  for (const auto& part : split(text, '|')) {
    std::string n = trim(part);
    if (n.empty()) throw Error(ErrorCode::Format, where + ": empty label name in '" + std::string(text) + "'");
    c.names.push_back(std::move(n));
  }
  return c;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

static std::string fill_impl(std::string_view t, std::string_view label, const std::string& source, int* fields) {
  std::string out;
  out.reserve(t.size() + label.size());
  int n = 0;
  bool explicit_index = false, automatic = false;
  auto fail = [&](const std::string& why) -> Error {
    return Error(ErrorCode::InvalidArgument, source + ": " + why + " in template '" + std::string(t) + "'");
  };
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (c == '{') {
      if (i + 1 < t.size() && t[i + 1] == '{') {
        out += '{';
        ++i;
        continue;
      }
      const size_t close = t.find('}', i + 1);
      if (close == std::string_view::npos) throw fail("unmatched '{'");
      const std::string_view field = t.substr(i + 1, close - i - 1);
      if (field.empty()) {
        if (explicit_index) throw fail("cannot mix '{}' and '{0}'");
        if (automatic) throw fail("more than one '{}' field (only one label is substituted)");
        automatic = true;
      } else if (field == "0") {
        if (automatic) throw fail("cannot mix '{}' and '{0}'");
        explicit_index = true;
      } else {
        throw fail("unsupported field '{" + std::string(field) + "}' (use '{}' for the label, '{{'/'}}' for braces)");
      }
      out += label;
      ++n;
      i = close;
    } else if (c == '}') {
      if (i + 1 < t.size() && t[i + 1] == '}') {
        out += '}';
        ++i;
        continue;
      }
      throw fail("single '}' (write '}}' for a literal brace)");
    } else {
      out += c;
    }
  }
  if (fields) *fields = n;
  return out;
}

std::string fill_template(std::string_view tmpl, std::string_view label, const std::string& source) {
  return fill_impl(tmpl, label, source, nullptr);
}

void check_template(std::string_view tmpl, const std::string& source) {
  int n = 0;
  fill_impl(tmpl, "x", source, &n);
  if (n == 0) throw Error(ErrorCode::InvalidArgument, source + ": template '" + std::string(tmpl) + "' has no '{}' for the label");
}

std::vector<std::string> builtin_template_set_names() { return builtin().template_order; }

bool is_builtin_template_set(const std::string& name) { return builtin().templates.count(canonical_name(name)) > 0; }

std::vector<std::string> builtin_template_set(const std::string& name) {
  const auto& d = builtin();
  auto it = d.templates.find(canonical_name(name));
  if (it == d.templates.end())
    throw Error(ErrorCode::NotFound, "unknown template set '" + name + "' (built-in: " + join_names(d.template_order) + ")");
  return it->second;
}

std::vector<std::string> parse_template_text(std::string_view text, const std::string& source) {
  std::vector<std::string> out;
  size_t line_no = 0, start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    ++line_no;
    std::string_view raw = text.substr(start, end - start);
    if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
    start = end + 1;
    const std::string t = trim(raw);
    if (t.empty() || t[0] == '#') {
      if (end == text.size()) break;
      continue;
    }
    const std::string where = source + ":" + std::to_string(line_no);
    try {
      check_template(t, where);
    } catch (const Error& e) {
      throw Error(ErrorCode::Format, e.what());
    }
    out.push_back(t);
    if (end == text.size()) break;
  }
  if (out.empty()) throw Error(ErrorCode::Format, source + ": no templates (one per line, '{}' marks the label)");
  return out;
}

std::vector<std::string> read_template_file(const std::string& path) { return parse_template_text(read_file(path), path); }

std::vector<std::string> resolve_templates(const std::string& name_or_file) {
  if (is_builtin_template_set(name_or_file)) return builtin_template_set(name_or_file);
  std::error_code ec;
  if (!std::filesystem::exists(name_or_file, ec))
    throw Error(ErrorCode::NotFound, "'" + name_or_file + "' is neither a built-in template set (" +
                                         join_names(builtin().template_order) + ") nor a template file");
  return read_template_file(name_or_file);
}

// ---------------------------------------------------------------------------------------------

std::vector<std::string> builtin_label_set_names() { return builtin().label_order; }

std::vector<ClassSpec> builtin_label_set(const std::string& name) {
  const auto& d = builtin();
  auto it = d.labels.find(canonical_name(name));
  if (it == d.labels.end())
    throw Error(ErrorCode::NotFound, "unknown label set '" + name + "' (built-in: " + join_names(d.label_order) + ")");
  return it->second;
}

std::vector<std::string> builtin_label_set_templates(const std::string& name) {
  const auto& d = builtin();
  auto it = d.label_templates.find(canonical_name(name));
  if (it == d.label_templates.end())
    throw Error(ErrorCode::NotFound, "unknown label set '" + name + "' (built-in: " + join_names(d.label_order) + ")");
  return it->second;
}

std::vector<ClassSpec> parse_label_list(std::string_view text) {
  std::vector<ClassSpec> out;
  for (const auto& item : split(text, ',')) {
    if (trim(item).empty()) throw Error(ErrorCode::InvalidArgument, "--labels: empty label in '" + std::string(text) + "'");
    try {
      out.push_back(parse_class_names(item, "--labels"));
    } catch (const Error& e) {
      throw Error(ErrorCode::InvalidArgument, e.what());
    }
  }
  return out;
}

static std::vector<ClassSpec> parse_label_json(std::string_view text, const std::string& source) {
  json j;
  try {
    j = parse_json_bounded(text, source);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::Format, source + ": invalid JSON: " + e.what());
  }
  std::vector<ClassSpec> out;
  auto templates_of = [&](const json& t, const std::string& where) {
    if (!t.is_array()) throw Error(ErrorCode::Format, where + ": \"templates\" must be an array of strings");
    std::vector<std::string> v;
    for (const auto& x : t) {
      if (!x.is_string()) throw Error(ErrorCode::Format, where + ": \"templates\" must be an array of strings");
      try {
        check_template(x.get<std::string>(), where);
      } catch (const Error& e) {
        throw Error(ErrorCode::Format, e.what());
      }
      v.push_back(x.get<std::string>());
    }
    return v;
  };
  auto names_of = [&](const json& n, const std::string& where) {
    ClassSpec c;
    if (n.is_string()) {
      c.names.push_back(trim(n.get<std::string>()));
    } else if (n.is_array() && !n.empty()) {
      for (const auto& x : n) {
        if (!x.is_string()) throw Error(ErrorCode::Format, where + ": synonyms must be strings");
        c.names.push_back(trim(x.get<std::string>()));
      }
    } else {
      throw Error(ErrorCode::Format, where + ": expected a label name or a non-empty list of synonyms");
    }
    for (const auto& s : c.names)
      if (s.empty()) throw Error(ErrorCode::Format, where + ": empty label name");
    return c;
  };
  if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      const std::string where = source + ": item " + std::to_string(i);
      const json& item = j[i];
      if (item.is_object()) {
        ClassSpec c;
        if (item.contains("names"))
          c = names_of(item["names"], where);
        else if (item.contains("name"))
          c = names_of(item["name"], where);
        else
          throw Error(ErrorCode::Format, where + ": object needs \"name\" or \"names\"");
        if (item.contains("templates")) c.templates = templates_of(item["templates"], where);
        out.push_back(std::move(c));
      } else {
        out.push_back(names_of(item, where));
      }
    }
  } else if (j.is_object()) {
    // {label: [templates]} (or {label: null} for the default templates)
    for (const auto& [k, v] : j.items()) {
      const std::string where = source + ": label '" + k + "'";
      ClassSpec c = parse_class_names(k, where);
      if (!v.is_null()) c.templates = templates_of(v, where);
      out.push_back(std::move(c));
    }
  } else {
    throw Error(ErrorCode::Format, source + ": expected a JSON array of labels or an object {label: [templates]}");
  }
  if (out.empty()) throw Error(ErrorCode::Format, source + ": no labels");
  return out;
}

std::vector<ClassSpec> parse_label_text(std::string_view text, const std::string& source) {
  if (looks_like_json(text, source)) return parse_label_json(text, source);
  std::vector<ClassSpec> out;
  size_t line_no = 0;
  for (const auto& raw_line : split(text, '\n')) {
    ++line_no;
    std::string t = trim(raw_line);
    if (t.empty() || t[0] == '#') continue;
    out.push_back(parse_class_names(t, source + ":" + std::to_string(line_no)));
  }
  if (out.empty()) throw Error(ErrorCode::Format, source + ": no labels (one per line, '|' between synonyms)");
  return out;
}

std::vector<ClassSpec> read_label_file(const std::string& path) { return parse_label_text(read_file(path), path); }

std::vector<std::string> class_prompts(const ClassSpec& cls, const std::vector<std::string>& default_templates) {
  const auto& ts = cls.templates.empty() ? default_templates : cls.templates;
  std::vector<std::string> out;
  out.reserve(ts.size() * cls.names.size());
  for (const auto& name : cls.names)
    for (const auto& t : ts) out.push_back(fill_template(t, name));
  return out;
}

}  // namespace clipkit
