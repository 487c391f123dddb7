// Prompt-evaluation reports: terminal tables, Markdown, JSON and self-contained HTML with SVG.
#include "zeroshot/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "core/mapped_file.h"
#include "vision/thumbnail.h"

namespace clipkit {

namespace {

std::string pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100.0 * v);
  return b;
}

std::string num(double v, int prec = 2) {
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

size_t utf8_width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string pad(const std::string& s, size_t w, bool right = false) {
  const size_t n = utf8_width(s);
  if (n >= w) return s;
  return right ? std::string(w - n, ' ') + s : s + std::string(w - n, ' ');
}

// A text table: the first `left` columns left-aligned, the others right-aligned.
std::string text_table(const std::vector<std::vector<std::string>>& rows, size_t left = 1) {
  std::vector<size_t> w;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], utf8_width(r[i]));
    }
  std::string out;
  for (size_t k = 0; k < rows.size(); ++k) {
    std::string line;
    for (size_t i = 0; i < rows[k].size(); ++i) line += (i ? "  " : "") + pad(rows[k][i], w[i], i >= left);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
    if (k == 0) {
      size_t total = 0;
      for (size_t i = 0; i < w.size(); ++i) total += w[i] + (i ? 2 : 0);
      out += std::string(total, '-') + "\n";
    }
  }
  return out;
}

std::string md_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '|') o += "\\|";
    else if (c == '\n') o += ' ';
    else o += c;
  }
  return o;
}

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string strategy_title(const StrategyResult& s) {
  return s.name + " (" + std::to_string(s.templates.size()) + (s.templates.size() == 1 ? " template)" : " templates)");
}

std::vector<std::vector<std::string>> metrics_rows(const EvalReport& r) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head = {"metric"};
  for (const auto& s : r.strategies) head.push_back(s.name);
  rows.push_back(head);
  std::vector<std::string> nt = {"templates"}, t1 = {"top-1"}, t5 = {"top-5"}, mpc = {"mean per-class"};
  for (const auto& s : r.strategies) {
    nt.push_back(std::to_string(s.templates.size()));
    t1.push_back(pct(s.result.top1));
    t5.push_back(pct(s.result.top5));
    mpc.push_back(pct(s.result.mean_per_class));
  }
  rows.push_back(nt);
  rows.push_back(t1);
  rows.push_back(t5);
  rows.push_back(mpc);
  return rows;
}

std::vector<std::vector<std::string>> per_class_rows(const EvalReport& r) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head = {"class", "images"};
  for (const auto& s : r.strategies) head.push_back(s.name);
  rows.push_back(head);
  for (size_t c = 0; c < r.labels.size(); ++c) {
    std::vector<std::string> row = {r.labels[c], std::to_string(c < r.class_counts.size() ? r.class_counts[c] : 0)};
    const bool empty = c < r.class_counts.size() && r.class_counts[c] == 0;
    for (const auto& s : r.strategies) row.push_back(empty ? "no images" : pct(s.result.per_class[c]));
    rows.push_back(row);
  }
  return rows;
}

std::vector<std::vector<std::string>> selection_rows(const SelectionReport& s) {
  std::vector<std::vector<std::string>> rows = {{"step", "template", "selection top-1", "held-out top-1"}};
  for (size_t i = 0; i < s.result.steps.size(); ++i) {
    const auto& st = s.result.steps[i];
    rows.push_back({std::to_string(i + 1), st.template_text, pct(st.selection_top1), pct(st.heldout_top1)});
  }
  return rows;
}

std::string selection_intro(const SelectionReport& s) {
  return "Forward selection from '" + s.pool_name + "' (" + std::to_string(s.pool_size) + " templates): " +
         std::to_string(s.result.selection_images) + " selection images, " + std::to_string(s.result.heldout_images) +
         " held-out images (holdout " + num(s.holdout, 2) + ", stratified by class).";
}

// Colour of a heat-map cell for a value in [0, 1] (white → dark blue).
std::string heat(double v) {
  v = std::clamp(v, 0.0, 1.0);
  const int r = static_cast<int>(std::lround(247 - v * (247 - 8)));
  const int g = static_cast<int>(std::lround(251 - v * (251 - 48)));
  const int b = static_cast<int>(std::lround(255 - v * (255 - 107)));
  char buf[16];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", r, g, b);
  return buf;
}

const char* kPalette[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"};

std::string bar_chart_svg(const EvalReport& r) {
  // grouped bars: per strategy, top-1 / top-5 / mean per-class
  const char* metric_names[] = {"top-1", "top-5", "mean per-class"};
  const size_t S = r.strategies.size();
  const int group_w = 150, bar_w = 36, left = 50, top = 20, h = 220, bottom = 60;
  const int width = left + static_cast<int>(S) * group_w + 20;
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << top + h + bottom
    << "\" role=\"img\" aria-label=\"accuracy per strategy\">\n";
  for (int k = 0; k <= 4; ++k) {
    const double y = top + h - h * k / 4.0;
    o << "<line x1=\"" << left << "\" x2=\"" << width - 10 << "\" y1=\"" << y << "\" y2=\"" << y
      << "\" stroke=\"#ddd\"/><text x=\"" << left - 6 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\" font-size=\"11\">"
      << k * 25 << "%</text>\n";
  }
  for (size_t s = 0; s < S; ++s) {
    const auto& res = r.strategies[s].result;
    const double vals[] = {res.top1, res.top5, res.mean_per_class};
    const int x0 = left + static_cast<int>(s) * group_w + 15;
    for (int m = 0; m < 3; ++m) {
      const double bh = h * std::clamp(vals[m], 0.0, 1.0);
      const int x = x0 + m * (bar_w + 4);
      o << "<rect x=\"" << x << "\" y=\"" << num(top + h - bh, 1) << "\" width=\"" << bar_w << "\" height=\"" << num(bh, 1)
        << "\" fill=\"" << kPalette[m] << "\"><title>" << html_escape(r.strategies[s].name) << " " << metric_names[m] << ": "
        << pct(vals[m]) << "</title></rect>\n";
      o << "<text x=\"" << x + bar_w / 2 << "\" y=\"" << num(top + h - bh - 3, 1)
        << "\" text-anchor=\"middle\" font-size=\"10\">" << num(100 * vals[m], 1) << "</text>\n";
    }
    o << "<text x=\"" << x0 + (3 * bar_w + 8) / 2 << "\" y=\"" << top + h + 16 << "\" text-anchor=\"middle\" font-size=\"12\">"
      << html_escape(r.strategies[s].name.size() > 22 ? r.strategies[s].name.substr(0, 20) + "…" : r.strategies[s].name)
      << "</text>\n";
  }
  for (int m = 0; m < 3; ++m)
    o << "<rect x=\"" << left + m * 130 << "\" y=\"" << top + h + 34 << "\" width=\"12\" height=\"12\" fill=\"" << kPalette[m]
      << "\"/><text x=\"" << left + m * 130 + 16 << "\" y=\"" << top + h + 44 << "\" font-size=\"12\">" << metric_names[m]
      << "</text>\n";
  o << "</svg>\n";
  return o.str();
}

std::string confusion_svg(const EvalReport& r, const StrategyResult& s) {
  const size_t C = r.labels.size();
  const int cell = C > 30 ? 10 : C > 15 ? 18 : 34;
  const bool numbers = cell >= 34;
  const int left = 150, top = 130;
  const int W = left + static_cast<int>(C) * cell + 10, H = top + static_cast<int>(C) * cell + 30;
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" role=\"img\" aria-label=\"confusion matrix\">\n";
  auto short_label = [](const std::string& l) { return l.size() > 22 ? l.substr(0, 20) + "…" : l; };
  for (size_t c = 0; c < C; ++c) {
    const int y = top + static_cast<int>(c) * cell;
    o << "<text x=\"" << left - 6 << "\" y=\"" << y + cell / 2 + 4 << "\" text-anchor=\"end\" font-size=\"11\">"
      << html_escape(short_label(r.labels[c])) << "</text>\n";
    const int x = left + static_cast<int>(c) * cell + cell / 2;
    o << "<text transform=\"translate(" << x + 4 << "," << top - 6 << ") rotate(-60)\" font-size=\"11\">"
      << html_escape(short_label(r.labels[c])) << "</text>\n";
  }
  for (size_t t = 0; t < C; ++t) {
    int64_t row_total = 0;
    for (auto v : s.result.confusion[t]) row_total += v;
    for (size_t p = 0; p < C; ++p) {
      const int64_t v = s.result.confusion[t][p];
      const double frac = row_total ? static_cast<double>(v) / static_cast<double>(row_total) : 0.0;
      const int x = left + static_cast<int>(p) * cell, y = top + static_cast<int>(t) * cell;
      o << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cell << "\" height=\"" << cell << "\" fill=\"" << heat(frac)
        << "\" stroke=\"#fff\"><title>true " << html_escape(r.labels[t]) << ", predicted " << html_escape(r.labels[p]) << ": "
        << v << " (" << pct(frac) << " of the class)</title></rect>\n";
      if (numbers && v > 0)
        o << "<text x=\"" << x + cell / 2 << "\" y=\"" << y + cell / 2 + 4 << "\" text-anchor=\"middle\" font-size=\"11\" fill=\""
          << (frac > 0.5 ? "#fff" : "#222") << "\">" << v << "</text>\n";
    }
  }
  o << "<text x=\"" << left << "\" y=\"" << H - 8 << "\" font-size=\"11\">rows: true class, columns: predicted class</text>\n";
  o << "</svg>\n";
  return o.str();
}

std::string selection_svg(const SelectionReport& s) {
  const auto& steps = s.result.steps;
  const int left = 50, top = 20, w = 520, h = 220;
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << left + w + 20 << "\" height=\"" << top + h + 60
    << "\" role=\"img\" aria-label=\"accuracy curve\">\n";
  for (int k = 0; k <= 4; ++k) {
    const double y = top + h - h * k / 4.0;
    o << "<line x1=\"" << left << "\" x2=\"" << left + w << "\" y1=\"" << y << "\" y2=\"" << y
      << "\" stroke=\"#ddd\"/><text x=\"" << left - 6 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\" font-size=\"11\">"
      << k * 25 << "%</text>\n";
  }
  const size_t n = steps.size();
  auto px = [&](size_t i) { return left + (n > 1 ? w * static_cast<double>(i) / static_cast<double>(n - 1) : w / 2.0); };
  auto py = [&](double v) { return top + h - h * std::clamp(v, 0.0, 1.0); };
  for (int series = 0; series < 2; ++series) {
    std::string pts;
    for (size_t i = 0; i < n; ++i) {
      const double v = series == 0 ? steps[i].selection_top1 : steps[i].heldout_top1;
      pts += num(px(i), 1) + "," + num(py(v), 1) + " ";
      o << "<circle cx=\"" << num(px(i), 1) << "\" cy=\"" << num(py(v), 1) << "\" r=\"3\" fill=\"" << kPalette[series]
        << "\"><title>" << (i + 1) << " templates: " << pct(v) << "</title></circle>\n";
    }
    o << "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"" << kPalette[series] << "\" points=\"" << pts << "\"/>\n";
  }
  for (size_t i = 0; i < n; ++i)
    o << "<text x=\"" << num(px(i), 1) << "\" y=\"" << top + h + 16 << "\" text-anchor=\"middle\" font-size=\"11\">" << i + 1
      << "</text>\n";
  o << "<text x=\"" << left + w / 2 << "\" y=\"" << top + h + 32 << "\" text-anchor=\"middle\" font-size=\"11\">templates selected</text>\n";
  o << "<rect x=\"" << left << "\" y=\"" << top + h + 42 << "\" width=\"12\" height=\"12\" fill=\"" << kPalette[0]
    << "\"/><text x=\"" << left + 16 << "\" y=\"" << top + h + 52 << "\" font-size=\"12\">selection split</text>\n";
  o << "<rect x=\"" << left + 150 << "\" y=\"" << top + h + 42 << "\" width=\"12\" height=\"12\" fill=\"" << kPalette[1]
    << "\"/><text x=\"" << left + 166 << "\" y=\"" << top + h + 52 << "\" font-size=\"12\">held-out split</text>\n";
  o << "</svg>\n";
  return o.str();
}

std::string html_table(const std::vector<std::vector<std::string>>& rows) {
  std::string o = "<table>\n<thead><tr>";
  for (const auto& h : rows[0]) o += "<th>" + html_escape(h) + "</th>";
  o += "</tr></thead>\n<tbody>\n";
  for (size_t i = 1; i < rows.size(); ++i) {
    o += "<tr>";
    for (size_t j = 0; j < rows[i].size(); ++j) o += (j ? "<td class=\"n\">" : "<td>") + html_escape(rows[i][j]) + "</td>";
    o += "</tr>\n";
  }
  return o + "</tbody></table>\n";
}

std::string md_table(const std::vector<std::vector<std::string>>& rows) {
  std::string o = "|";
  for (const auto& h : rows[0]) {
    o += ' ';
    o += md_escape(h);
    o += " |";
  }
  o += "\n|";
  for (size_t j = 0; j < rows[0].size(); ++j) o += j ? "---:|" : "---|";
  o += "\n";
  for (size_t i = 1; i < rows.size(); ++i) {
    o += "|";
    for (const auto& c : rows[i]) {
      o += ' ';
      o += md_escape(c);
      o += " |";
    }
    o += "\n";
  }
  return o;
}

std::string curve_cell(const std::vector<double>& runs) {
  const auto [m, sd] = mean_std(runs);
  return runs.size() > 1 ? pct(m) + " ± " + num(100.0 * sd, 1) : pct(m);
}

// method | K=1 | K=2 | ...: mean ± std of top-1 (in points) over the repeats; `mark` wraps the best
// mean of each column.
std::vector<std::vector<std::string>> curve_rows(const LearningCurve& c, const std::string& open = "",
                                                 const std::string& close = "") {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head = {"method"};
  for (int k : c.shots) head.push_back(std::to_string(k) + (k == 1 ? " shot" : " shots"));
  rows.push_back(head);
  for (size_t m = 0; m < c.methods.size(); ++m) {
    std::vector<std::string> row = {c.methods[m]};
    for (size_t k = 0; k < c.shots.size(); ++k) {
      double best = -1.0;
      for (size_t o = 0; o < c.methods.size(); ++o) best = std::max(best, mean_std(c.top1[o][k]).first);
      const bool top = mean_std(c.top1[m][k]).first == best;
      row.push_back((top ? open : "") + curve_cell(c.top1[m][k]) + (top ? close : ""));
    }
    rows.push_back(row);
  }
  return rows;
}

std::string curve_intro(const LearningCurve& c) {
  return "Top-1 accuracy on " + std::to_string(c.test_images) + " test images never used for training, mean ± standard "
         "deviation (points) over " + std::to_string(c.repeats) + " draw(s) of the training images (seed " +
         std::to_string(c.seed) + "); training images from " + c.train_source + "; zero-shot parts use the templates of '" +
         c.zero_shot_templates + "'.";
}

// Line chart: x = shots (log scale), y = mean top-1, one line per method.
std::string curve_svg(const LearningCurve& c) {
  const int w = 640, h = 320, left = 56, right = 170, top = 16, bottom = 40;
  const int pw = w - left - right, ph = h - top - bottom;
  const char* const colours[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#9c755f"};
  const double lx0 = std::log2(static_cast<double>(c.shots.front())), lx1 = std::log2(static_cast<double>(c.shots.back()));
  auto xpos = [&](int k) {
    return left + (lx1 > lx0 ? (std::log2(static_cast<double>(k)) - lx0) / (lx1 - lx0) : 0.5) * pw;
  };
  auto ypos = [&](double v) { return top + (1.0 - v) * ph; };
  auto q = [](const std::string& v) { return "'" + v + "'"; };
  std::string o = "<svg xmlns='http://www.w3.org/2000/svg' width=" + q(std::to_string(w)) + " height=" +
                  q(std::to_string(h)) + " font-size='12' role='img' aria-label='learning curve'>\n";
  for (int t = 0; t <= 4; ++t) {
    const double v = t / 4.0;
    o += "<line x1=" + q(std::to_string(left)) + " x2=" + q(std::to_string(left + pw)) + " y1=" + q(num(ypos(v), 1)) +
         " y2=" + q(num(ypos(v), 1)) + " stroke='#ddd'/><text x=" + q(std::to_string(left - 6)) + " y=" +
         q(num(ypos(v) + 4, 1)) + " text-anchor='end'>" + std::to_string(25 * t) + "%</text>\n";
  }
  for (int k : c.shots)
    o += "<text x=" + q(num(xpos(k), 1)) + " y=" + q(std::to_string(top + ph + 18)) + " text-anchor='middle'>" +
         std::to_string(k) + "</text>\n";
  o += "<text x=" + q(std::to_string(left + pw / 2)) + " y=" + q(std::to_string(h - 4)) +
       " text-anchor='middle'>images per class</text>\n";
  for (size_t m = 0; m < c.methods.size(); ++m) {
    const std::string col = colours[m % 7];
    std::string pts;
    for (size_t k = 0; k < c.shots.size(); ++k)
      pts += num(xpos(c.shots[k]), 1) + "," + num(ypos(mean_std(c.top1[m][k]).first), 1) + " ";
    o += "<polyline fill='none' stroke=" + q(col) + " stroke-width='2' points=" + q(pts) + "/>\n";
    for (size_t k = 0; k < c.shots.size(); ++k)
      o += "<circle cx=" + q(num(xpos(c.shots[k]), 1)) + " cy=" + q(num(ypos(mean_std(c.top1[m][k]).first), 1)) +
           " r='3' fill=" + q(col) + "><title>" + html_escape(c.methods[m]) + ", " + std::to_string(c.shots[k]) +
           " shots: " + curve_cell(c.top1[m][k]) + "</title></circle>\n";
    const int ly = top + 14 + static_cast<int>(m) * 18;
    o += "<rect x=" + q(std::to_string(left + pw + 14)) + " y=" + q(std::to_string(ly - 9)) + " width='12' height='3' fill=" +
         q(col) + "/><text x=" + q(std::to_string(left + pw + 32)) + " y=" + q(std::to_string(ly - 4)) + ">" +
         html_escape(c.methods[m]) + "</text>\n";
  }
  return o + "</svg>\n";
}

// \x01 and \x02 (kept by html_escape) mark bold text in a rendered table.
std::string bold_marked(std::string html) {
  std::string o;
  for (char c : html) o += c == '\x01' ? std::string("<b>") : c == '\x02' ? std::string("</b>") : std::string(1, c);
  return o;
}

// Index of the strategy with the best top-1 (ties: the first listed); -1 when there is none.
int best_strategy(const EvalReport& r) {
  int best = -1;
  for (size_t s = 0; s < r.strategies.size(); ++s)
    if (best < 0 || r.strategies[s].result.top1 > r.strategies[static_cast<size_t>(best)].result.top1) best = static_cast<int>(s);
  return best;
}

std::string best_line(const EvalReport& r) {
  const int b = best_strategy(r);
  if (b < 0) return "";
  const auto& s = r.strategies[static_cast<size_t>(b)];
  return "best: " + s.name + " (top-1 " + pct(s.result.top1) + ")";
}

// Horizontal bars: per class, one bar per strategy (top-1 of the class).
std::string per_class_svg(const EvalReport& r) {
  const size_t C = r.labels.size(), S = r.strategies.size();
  const char* const colours[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#9c755f"};
  const int bar_h = 10, left = 160, width = 420, top = 10;
  const int group_h = static_cast<int>(S) * bar_h + 8;
  const int H = top + static_cast<int>(C) * group_h + 30 + static_cast<int>(S) * 16;
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << left + width + 60 << "' height='" << H
    << "' font-size='11' role='img' aria-label='per-class accuracy'>\n";
  for (int k = 0; k <= 4; ++k) {
    const int x = left + width * k / 4;
    o << "<line x1='" << x << "' x2='" << x << "' y1='" << top << "' y2='" << top + static_cast<int>(C) * group_h
      << "' stroke='#ddd'/><text x='" << x << "' y='" << top + static_cast<int>(C) * group_h + 14
      << "' text-anchor='middle'>" << k * 25 << "%</text>\n";
  }
  for (size_t c = 0; c < C; ++c) {
    const int y0 = top + static_cast<int>(c) * group_h;
    o << "<text x='" << left - 6 << "' y='" << y0 + group_h / 2 + 3 << "' text-anchor='end'>" << html_escape(r.labels[c])
      << "</text>\n";
    for (size_t s = 0; s < S; ++s) {
      const double v = r.strategies[s].result.per_class[c];
      o << "<rect x='" << left << "' y='" << y0 + static_cast<int>(s) * bar_h << "' width='" << num(width * v, 1)
        << "' height='" << bar_h - 2 << "' fill='" << colours[s % 7] << "'><title>" << html_escape(r.labels[c]) << ", "
        << html_escape(r.strategies[s].name) << ": " << pct(v) << "</title></rect>\n";
    }
  }
  for (size_t s = 0; s < S; ++s) {
    const int y = top + static_cast<int>(C) * group_h + 30 + static_cast<int>(s) * 16;
    o << "<rect x='" << left << "' y='" << y - 9 << "' width='12' height='10' fill='" << colours[s % 7] << "'/><text x='"
      << left + 18 << "' y='" << y << "'>" << html_escape(r.strategies[s].name) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8) | static_cast<uint8_t>(in[i + 2]);
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += t[v & 63];
  }
  if (i < in.size()) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<uint8_t>(in[i + 1]) << 8;
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += i + 1 < in.size() ? t[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// Misclassified images of one strategy: a thumbnail of each embedded (WebP, long side
// kGalleryThumbnailSide, made as the server's: upright, Pillow's bicubic resize), true and
// predicted label. At most 48 per strategy; an image that no longer decodes is named only.
std::string gallery_html(const EvalReport& r, const StrategyResult& s, const std::vector<int>& truth) {
  constexpr size_t kMax = 48;
  constexpr int kGalleryThumbnailSide = 128;
  std::string o = "<div class=\"gallery\">\n";
  size_t shown = 0, wrong = 0;
  for (size_t i = 0; i < s.result.predictions.size() && i < truth.size() && i < r.image_paths.size(); ++i) {
    const int t = truth[i], p = s.result.predictions[i];
    if (t == p) continue;
    ++wrong;
    if (shown == kMax) continue;
    ++shown;
    std::string img;
    try {
      DecodeOptions d;
      d.apply_exif_orientation = true;  // looked at, not encoded: show it upright
      const std::string webp = vision::encode_thumbnail(decode_image_file(r.image_paths[i], d), kGalleryThumbnailSide);
      img = "<img src=\"data:image/webp;base64," + base64(webp) + "\" alt=\"\">";
    } catch (const std::exception&) {
    }
    if (img.empty()) img = "<div class=\"noimg\">(not embedded)</div>";
    o += "<figure>" + img + "<figcaption title=\"" + html_escape(r.image_paths[i]) + "\">true <b>" +
         html_escape(r.labels.at(static_cast<size_t>(t))) + "</b><br>predicted <b>" +
         html_escape(r.labels.at(static_cast<size_t>(p))) + "</b></figcaption></figure>\n";
  }
  o += "</div>\n";
  if (wrong == 0) return "<p>No misclassified image.</p>\n";
  std::string head = "<p class=\"muted\">" + std::to_string(wrong) + " misclassified image(s)";
  if (wrong > shown) head += ", the first " + std::to_string(shown) + " shown";
  return head + ".</p>\n" + o;
}

std::string summary_line(const EvalReport& r) {
  std::string s = std::to_string(r.images) + " images in " + std::to_string(r.labels.size()) + " classes";
  if (r.failed_images) s += " (" + std::to_string(r.failed_images) + " unreadable images skipped)";
  std::string empty;
  for (size_t c = 0; c < r.labels.size() && c < r.class_counts.size(); ++c)
    if (r.class_counts[c] == 0) empty += (empty.empty() ? "" : ", ") + r.labels[c];
  if (!empty.empty()) s += "; no readable image in class(es) " + empty + ", left out of the per-class mean";
  return s;
}

}  // namespace

std::pair<double, double> mean_std(const std::vector<double>& v) {
  if (v.empty()) return {0.0, 0.0};
  double m = 0.0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  if (v.size() < 2) return {m, 0.0};
  double ss = 0.0;
  for (double x : v) ss += (x - m) * (x - m);
  return {m, std::sqrt(ss / static_cast<double>(v.size() - 1))};
}

std::string render_eval_text(const EvalReport& r) {
  std::string o = "dataset " + r.dataset + ": " + summary_line(r) + "\n\n";
  if (!r.strategies.empty()) {
    o += text_table(metrics_rows(r)) + best_line(r) + "\n\n";
    o += "per-class top-1 accuracy\n" + text_table(per_class_rows(r));
    if (r.labels.size() <= 20) {
      for (const auto& s : r.strategies) {
        o += "\nconfusion matrix, " + strategy_title(s) + " (rows: true, columns: predicted)\n";
        std::vector<std::vector<std::string>> rows;
        std::vector<std::string> head = {"true \\ predicted"};
        for (size_t c = 0; c < r.labels.size(); ++c) head.push_back(std::to_string(c));
        rows.push_back(head);
        for (size_t t = 0; t < r.labels.size(); ++t) {
          std::vector<std::string> row = {std::to_string(t) + " " + r.labels[t]};
          for (auto v : s.result.confusion[t]) row.push_back(v ? std::to_string(v) : ".");
          rows.push_back(row);
        }
        o += text_table(rows);
      }
    }
  }
  if (r.selection) {
    o += "\n" + selection_intro(*r.selection) + "\n" + text_table(selection_rows(*r.selection), 2);
  }
  if (r.learning_curve) {
    o += "\nfew-shot learning curve (top-1; * best of its column)\n" + text_table(curve_rows(*r.learning_curve, "*", "")) +
         curve_intro(*r.learning_curve) + "\n";
  }
  return o;
}

std::string render_eval_markdown(const EvalReport& r) {
  std::string o = "# Prompt evaluation\n\n";
  o += "- model: `" + r.model + "`\n- dataset: `" + r.dataset + "` — " + summary_line(r) + "\n";
  o += "- logit scale: " + num(r.scale, 2) + "\n\n";
  if (!r.strategies.empty()) {
    o += "## Accuracy by prompt strategy\n\n" + md_table(metrics_rows(r)) + "\n**" + md_escape(best_line(r)) + "**\n\n";
    o += "Templates per strategy:\n\n";
    for (const auto& s : r.strategies) {
      o += "- **" + md_escape(s.name) + "**: ";
      for (size_t i = 0; i < s.templates.size() && i < 10; ++i) o += (i ? ", " : "") + std::string("`") + s.templates[i] + "`";
      if (s.templates.size() > 10) o += ", … (" + std::to_string(s.templates.size()) + " in all)";
      o += "\n";
    }
    o += "\n## Per-class top-1 accuracy\n\n" + md_table(per_class_rows(r)) + "\n";
    o += "## Confusion matrices\n\nRows: true class, columns: predicted class.\n\n";
    for (const auto& s : r.strategies) {
      o += "### " + md_escape(strategy_title(s)) + "\n\n";
      std::vector<std::vector<std::string>> rows;
      std::vector<std::string> head = {"true \\ predicted"};
      for (const auto& l : r.labels) head.push_back(l);
      rows.push_back(head);
      for (size_t t = 0; t < r.labels.size(); ++t) {
        std::vector<std::string> row = {r.labels[t]};
        for (auto v : s.result.confusion[t]) row.push_back(std::to_string(v));
        rows.push_back(row);
      }
      o += md_table(rows) + "\n";
    }
  }
  if (r.selection) {
    o += "## Template selection\n\n" + selection_intro(*r.selection) + "\n\n" + md_table(selection_rows(*r.selection)) + "\n";
  }
  if (r.learning_curve) {
    o += "## Few-shot learning curve\n\n" + curve_intro(*r.learning_curve) + " The best method of each column is in bold.\n\n" +
         md_table(curve_rows(*r.learning_curve, "**", "**")) + "\n";
  }
  return o;
}

std::string render_eval_json(const EvalReport& r) {
  using nlohmann::json;
  json j;
  j["model"] = r.model;
  j["dataset"] = r.dataset;
  j["labels"] = r.labels;
  j["class_counts"] = r.class_counts;
  j["images"] = r.images;
  j["failed_images"] = r.failed_images;
  j["scale"] = r.scale;
  j["strategies"] = json::array();
  for (const auto& s : r.strategies) {
    json per_class = json::array();  // null for a class without a readable image
    for (size_t c = 0; c < s.result.per_class.size(); ++c)
      per_class.push_back(c < r.class_counts.size() && r.class_counts[c] == 0 ? json() : json(s.result.per_class[c]));
    json predictions = json::array();  // one {"image", "label", "prob"} per image with its path known
    for (size_t i = 0; i < r.image_paths.size() && i < s.result.predictions.size(); ++i)
      predictions.push_back({{"image", r.image_paths[i]},
                             {"label", r.labels.at(static_cast<size_t>(s.result.predictions[i]))},
                             {"prob", i < s.result.top1_probs.size() ? s.result.top1_probs[i] : 0.0f}});
    j["strategies"].push_back({{"name", s.name},
                               {"templates", s.templates},
                               {"top1", s.result.top1},
                               {"top5", s.result.top5},
                               {"mean_per_class", s.result.mean_per_class},
                               {"per_class", per_class},
                               {"confusion", s.result.confusion},
                               {"predictions", predictions}});
  }
  if (r.selection) {
    json steps = json::array();
    for (const auto& st : r.selection->result.steps)
      steps.push_back({{"template", st.template_text},
                       {"pool_index", st.template_index},
                       {"selection_top1", st.selection_top1},
                       {"heldout_top1", st.heldout_top1}});
    j["selection"] = {{"pool", r.selection->pool_name},
                      {"pool_size", r.selection->pool_size},
                      {"holdout", r.selection->holdout},
                      {"selection_images", r.selection->result.selection_images},
                      {"heldout_images", r.selection->result.heldout_images},
                      {"steps", steps}};
  }
  if (r.learning_curve) {
    const LearningCurve& c = *r.learning_curve;
    json methods = json::array();
    for (size_t m = 0; m < c.methods.size(); ++m) {
      json points = json::array();
      for (size_t k = 0; k < c.shots.size(); ++k) {
        const auto [mean, sd] = mean_std(c.top1[m][k]);
        points.push_back({{"shots", c.shots[k]}, {"top1_mean", mean}, {"top1_std", sd}, {"top1_runs", c.top1[m][k]}});
      }
      methods.push_back({{"method", c.methods[m]}, {"points", points}});
    }
    j["learning_curve"] = {{"shots", c.shots},          {"repeats", c.repeats},
                           {"seed", c.seed},            {"train", c.train_source},
                           {"test_images", c.test_images}, {"zero_shot_templates", c.zero_shot_templates},
                           {"methods", methods}};
  }
  return j.dump(1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string render_eval_html(const EvalReport& r) {
  std::string o =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>clipkit prompt evaluation</title>\n"
      "<style>\nbody{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;"
      "color:#222;padding:0 1em}\ntable{border-collapse:collapse;margin:1em 0}\nth,td{border:1px solid #ccc;padding:4px 10px}\n"
      "th{background:#f3f5f8}\ntd.n{text-align:right;font-variant-numeric:tabular-nums}\ncode{background:#f3f5f8;padding:1px 4px}\n"
      "h2{margin-top:2em;border-bottom:1px solid #ddd}\n.muted{color:#666}\n.best{font-weight:bold;color:#1a5e20}\n"
      ".pair{display:flex;gap:2em;overflow-x:auto;max-width:100%}\n.cm{flex:none}\n.gallery{display:flex;flex-wrap:wrap;gap:8px}\n"
      ".gallery figure{margin:0;width:140px;font-size:12px}\n.gallery img{width:128px;height:128px;object-fit:contain;"
      "background:#f3f5f8;image-rendering:auto}\n.noimg{width:128px;height:128px;background:#f3f5f8;color:#888;"
      "display:flex;align-items:center;justify-content:center}\n</style>\n</head>\n<body>\n";
  o += "<h1>Prompt evaluation</h1>\n<p>Model <code>" + html_escape(r.model) + "</code>, dataset <code>" +
       html_escape(r.dataset) + "</code>: " + html_escape(summary_line(r)) + ". Logit scale " + num(r.scale, 2) + ".</p>\n";
  if (!r.strategies.empty()) {
    o += "<h2>Accuracy by prompt strategy</h2>\n";
    {
      auto rows = metrics_rows(r);
      const int b = best_strategy(r);
      for (size_t k = 1; k < rows.size(); ++k) rows[k][static_cast<size_t>(b) + 1] = "\x01" + rows[k][static_cast<size_t>(b) + 1] + "\x02";
      rows[0][static_cast<size_t>(b) + 1] = "\x01" + rows[0][static_cast<size_t>(b) + 1] + " (best)\x02";
      o += bold_marked(html_table(rows)) + "<p class=\"best\">" + html_escape(best_line(r)) + "</p>\n";
    }
    o += bar_chart_svg(r);
    o += "<h3>Templates</h3>\n<ul>\n";
    for (const auto& s : r.strategies) {
      o += "<li><b>" + html_escape(s.name) + "</b>: ";
      for (size_t i = 0; i < s.templates.size() && i < 10; ++i) o += (i ? ", " : "") + std::string("<code>") + html_escape(s.templates[i]) + "</code>";
      if (s.templates.size() > 10) o += ", … (" + std::to_string(s.templates.size()) + " in all)";
      o += "</li>\n";
    }
    o += "</ul>\n<h2>Per-class top-1 accuracy</h2>\n" + per_class_svg(r) + html_table(per_class_rows(r));
    o += "<h2>Confusion matrices</h2>\n<p class=\"muted\">Cell colour: fraction of the true class (row) predicted as "
         "the column's class. The matrices stand side by side (scroll sideways for more).</p>\n";
    // side by side in one scrolling row: any two strategies' matrices can be read next to each other
    o += "<div class=\"pair\">\n";
    for (const auto& st : r.strategies)
      o += "<div class=\"cm\"><h3>" + html_escape(strategy_title(st)) + "</h3>\n" + confusion_svg(r, st) + "</div>\n";
    o += "</div>\n";
    if (!r.truth.empty()) {
      o += "<h2>Misclassified images</h2>\n";
      for (const auto& s : r.strategies)
        o += "<details><summary>" + html_escape(s.name) + "</summary>\n" + gallery_html(r, s, r.truth) + "</details>\n";
    }
  }
  if (r.selection) {
    o += "<h2>Template selection</h2>\n<p>" + html_escape(selection_intro(*r.selection)) + "</p>\n" +
         html_table(selection_rows(*r.selection)) + selection_svg(*r.selection);
  }
  if (r.learning_curve) {
    o += "<h2>Few-shot learning curve</h2>\n<p>" + html_escape(curve_intro(*r.learning_curve)) +
         " The best method of each column is in bold.</p>\n" + bold_marked(html_table(curve_rows(*r.learning_curve, "\x01", "\x02"))) +
         curve_svg(*r.learning_curve);
  }
  o += "<p class=\"muted\">Generated by clipkit eval.</p>\n</body>\n</html>\n";
  return o;
}

void write_eval_report(const EvalReport& r, const std::string& path) {
  std::string ext;
  const auto dot = path.find_last_of('.');
  if (dot != std::string::npos) ext = path.substr(dot + 1);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string text;
  if (ext == "html" || ext == "htm")
    text = render_eval_html(r);
  else if (ext == "md" || ext == "markdown")
    text = render_eval_markdown(r);
  else if (ext == "json")
    text = render_eval_json(r);
  else
    throw Error(ErrorCode::InvalidArgument, "report '" + path + "': unknown format (use .html, .md or .json)");
  write_file_atomic(path, text.data(), text.size());
}

}  // namespace clipkit
