// Prompt-evaluation reports (clipkit eval): Markdown, JSON and a self-contained HTML page.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "clipkit/zeroshot.h"

namespace clipkit {

struct StrategyResult {
  std::string name;                    // "none", "imagenet80", a file path, ...
  std::vector<std::string> templates;  // the templates used
  EvalResult result;
};

struct SelectionReport {
  std::string pool_name;
  size_t pool_size = 0;
  double holdout = 0.5;
  SelectionResult result;
};

// Top-1 accuracy of classifiers trained on K images per class (clipkit eval --few-shot), on test
// images never used for training.
struct LearningCurve {
  std::vector<int> shots;                           // K values, ascending
  std::vector<std::string> methods;                 // "zero-shot", "linear-probe", ...
  std::vector<std::vector<std::vector<double>>> top1;  // [method][shot][repeat]
  int repeats = 1;
  uint64_t seed = 0;
  std::string train_source;  // the training folder, or how the dataset was split
  int64_t test_images = 0;
  std::string zero_shot_templates;  // the strategy whose templates the zero-shot parts use
};

struct EvalReport {
  std::string model;                 // model path
  std::string dataset;               // dataset folder
  std::vector<std::string> labels;   // class display labels
  std::vector<int64_t> class_counts; // images per class
  std::vector<std::string> image_paths;  // the images scored, in the order of the results
  std::vector<int> truth;                // class index of each scored image (the HTML gallery of misclassified images)
  int64_t images = 0;
  int64_t failed_images = 0;
  float scale = 100.0f;
  std::vector<StrategyResult> strategies;
  std::optional<SelectionReport> selection;
  std::optional<LearningCurve> learning_curve;
};

// Mean and sample standard deviation (0 for one value).
std::pair<double, double> mean_std(const std::vector<double>& v);

// Plain-text tables for the terminal (metrics side by side, per-class accuracy, confusion).
std::string render_eval_text(const EvalReport& r);
std::string render_eval_markdown(const EvalReport& r);
std::string render_eval_json(const EvalReport& r);  // pretty-printed JSON object
std::string render_eval_html(const EvalReport& r);  // one self-contained page, inline SVG charts
// Picks the format from the extension (.html/.htm, .md/.markdown, .json) and writes atomically.
// Throws Error(InvalidArgument) for another extension.
void write_eval_report(const EvalReport& r, const std::string& path);

}  // namespace clipkit
