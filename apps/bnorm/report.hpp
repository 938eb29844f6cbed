// report.hpp: the self-contained HTML report the `bnorm` command writes after an experiment.
//
// One page, no external files, no JavaScript: inline CSS, figures drawn by gnuplot and embedded
// as inline SVG, tables, the exact command, the settings, the date, the machine, and relative
// links to the raw metrics. Needs the `gnuplot` program (Debian gnuplot-nox) when a report has
// figures.
//
//   bnorm::app::Figure loss{.title = "training loss", .xlabel = "step", .ylabel = "loss", .log_y = true};
//   loss.series.push_back({.label = "mlp+bn", .x = steps, .y = mean, .low = min, .high = max});
//   bnorm::app::Report report{.title = "BN vs no BN", .command = "bnorm compare ...",
//                             .date = "2025-01-01 12:00", .machine = bnorm::app::machine_description()};
//   report.sections.push_back({.heading = "Training", .figures = {loss}});
//   bnorm::app::write_report("runs/compare/report.html", report);    // atomic: temp file + rename
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace bnorm::app {

// One line on a figure. x and y have the same size; low and high are either both empty (no band)
// or both of that size, and draw a translucent band (min/max or mean +- std over seeds, say).
// Every member has a default, so designated initializers may name only what they set.
// Points whose coordinates are NaN or infinite (or not positive on a log axis) are skipped.
struct Series {
    std::string label{};
    std::vector<double> x{}, y{};
    std::vector<double> low{}, high{};
};

struct Figure {
    std::string title{}, xlabel{}, ylabel{};
    bool log_x = false, log_y = false;
    std::optional<double> y_min{}, y_max{};  // unset: gnuplot's autoscale
    std::vector<Series> series{};
    std::string caption{};  // shown under the figure in the HTML
};

// Rows shorter than the header are padded with empty cells; a column whose cells all read as
// numbers is right-aligned.
struct Table {
    std::string caption{};
    std::vector<std::string> header{};
    std::vector<std::vector<std::string>> rows{};
};

// A claim of batch normalization beside what this run measured of it; the report opens with the
// claims of all its sections in one table.
struct Claim {
    std::string claim{}, measured{};
};

// Drawn in this order: heading, paragraphs, figures, tables.
struct Section {
    std::string heading{};
    std::vector<Claim> claims{};
    std::vector<std::string> paragraphs{};
    std::vector<Figure> figures{};
    std::vector<Table> tables{};
};

struct Report {
    std::string title{};
    std::string command{};  // the exact command line, shown verbatim in a <pre>
    std::vector<std::pair<std::string, std::string>> settings{};
    std::string date{};
    std::string machine{};
    std::vector<Section> sections{};
    std::vector<std::string> raw_files{};  // links relative to the report, e.g. "metrics.csv"
};

// The figure as <svg>...</svg> markup drawn by gnuplot (720x420, no XML prolog), ready to inline
// in HTML. Every id in the markup, and every reference to one, starts with id_prefix, so that
// several figures on one page do not clash; the overload without it uses a prefix unique within
// the process ("bnorm-svg<N>-").
//   requires: each series has x.size() == y.size(), and low/high empty or of that size;
//             y_min/y_max, on a log y axis, positive.
//   throws:   std::invalid_argument naming the figure and series when the data are malformed;
//             std::runtime_error with gnuplot's error output when gnuplot fails, or saying to
//             install gnuplot-nox when it is missing.
std::string render_svg(const Figure& figure);
std::string render_svg(const Figure& figure, const std::string& id_prefix);

// The whole page as one HTML document. Every text of the report is HTML-escaped; figures are
// rendered with render_svg (ids prefixed "fig<N>-"), so this throws what render_svg throws.
std::string render_html(const Report& report);

// Writes render_html(report) to path atomically with bnorm::nn::write_file_atomically: a
// temporary file in the same directory, fsync, rename. On failure the file at path is left as it
// was and no temporary file remains; throws what render_html throws, or std::system_error (a
// std::runtime_error) naming path and the step that failed.
void write_report(const std::filesystem::path& path, const Report& report);

// One line describing this machine, from /proc/cpuinfo, /proc/meminfo and uname, e.g.
// "AMD EPYC 7763 64-Core Processor, 16 logical CPUs, 125.8 GiB memory, Linux 6.1.0-18-amd64 x86_64".
// Parts that cannot be read are left out; never throws.
std::string machine_description();

}  // namespace bnorm::app
