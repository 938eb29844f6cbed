// The HTML report: gnuplot draws each figure as SVG, which is inlined in one page with the text,
// tables and settings. See report.hpp for the contract.
#include "report.hpp"

#include "bnorm/nn/atomic_file.hpp"

#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <thread>

extern char** environ;

namespace bnorm::app {
namespace {

// ---- text ----------------------------------------------------------------------------------------

std::string html_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size() + text.size() / 8);
    for (const char ch : text) {
        switch (ch) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&#39;"; break;
        default: out += ch;
        }
    }
    return out;
}

// A relative link as an href: every byte outside the unreserved set and '/' is percent-encoded,
// so a name can neither leave the attribute nor become a scheme ("javascript:" has its ':' encoded).
std::string url_encode_path(std::string_view path) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (const char ch : path) {
        const auto byte = static_cast<unsigned char>(ch);
        const bool keep = (byte >= 'A' && byte <= 'Z') || (byte >= 'a' && byte <= 'z') ||
                          (byte >= '0' && byte <= '9') || byte == '-' || byte == '.' || byte == '_' ||
                          byte == '~' || byte == '/';
        if (keep) {
            out += ch;
        } else {
            out += '%';
            out += hex[byte >> 4];
            out += hex[byte & 15];
        }
    }
    return out;
}

// A gnuplot single-quoted string: no escapes inside except '' for a quote. Newlines would end
// the command, so they become spaces.
std::string gnuplot_quote(std::string_view text) {
    std::string out = "'";
    for (const char ch : text) {
        if (ch == '\'')
            out += "''";
        else if (ch == '\n' || ch == '\r')
            out += ' ';
        else
            out += ch;
    }
    return out + "'";
}

// Shortest text that reads back as the same double, independent of the locale.
std::string number_text(double value) {
    std::array<char, 32> buffer{};
    const auto result = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
    return std::string(buffer.data(), result.ptr);
}

bool looks_numeric(std::string_view cell) {
    while (!cell.empty() && cell.front() == ' ') cell.remove_prefix(1);
    while (!cell.empty() && (cell.back() == ' ' || cell.back() == '%')) cell.remove_suffix(1);
    if (!cell.empty() && cell.front() == '+') cell.remove_prefix(1);
    if (cell.empty()) return false;
    double value = 0;
    const auto result = std::from_chars(cell.data(), cell.data() + cell.size(), value);
    return result.ec == std::errc() && result.ptr == cell.data() + cell.size();
}

std::string read_whole_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// ---- gnuplot --------------------------------------------------------------------------------------

// Distinct on white and for the common colour-vision deficiencies (the Tableau 10 palette).
constexpr std::array<const char*, 10> palette = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

// A series with few points is drawn with markers, so that a single point is visible at all.
constexpr size_t max_points_without_markers = 30;

class TemporaryDirectory {
public:
    TemporaryDirectory() {
        std::string pattern = (std::filesystem::temp_directory_path() / "bnorm-gnuplot-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr)
            throw std::runtime_error("cannot create a temporary directory " + pattern + " for gnuplot: " +
                                     std::strerror(errno));
        path_ = pattern;
    }
    ~TemporaryDirectory() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    TemporaryDirectory(const TemporaryDirectory&) = delete;
    TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

bool usable(double value, bool log_axis) { return std::isfinite(value) && (!log_axis || value > 0); }

void check_series(const Figure& figure, const Series& series) {
    const auto where = [&] { return "figure '" + figure.title + "', series '" + series.label + "': "; };
    if (series.x.size() != series.y.size())
        throw std::invalid_argument(where() + "x has " + std::to_string(series.x.size()) + " values but y has " +
                                    std::to_string(series.y.size()) + "; give one y per x");
    if (series.low.size() != series.high.size() || (!series.low.empty() && series.low.size() != series.x.size()))
        throw std::invalid_argument(where() + "low has " + std::to_string(series.low.size()) +
                                    " values and high " + std::to_string(series.high.size()) + " for " +
                                    std::to_string(series.x.size()) +
                                    " points; give both with one value per x, or leave both empty");
}

void check_range(const Figure& figure) {
    const auto where = [&] { return "figure '" + figure.title + "': "; };
    if ((figure.y_min && !std::isfinite(*figure.y_min)) || (figure.y_max && !std::isfinite(*figure.y_max)))
        throw std::invalid_argument(where() + "y_min and y_max must be finite numbers; leave them unset to autoscale");
    if (figure.log_y && ((figure.y_min && !(*figure.y_min > 0)) || (figure.y_max && !(*figure.y_max > 0))))
        throw std::invalid_argument(where() + "y_min and y_max must be positive on a log y axis");
    if (figure.y_min && figure.y_max && !(*figure.y_min < *figure.y_max))
        throw std::invalid_argument(where() + "y_min (" + number_text(*figure.y_min) + ") must be below y_max (" +
                                    number_text(*figure.y_max) + ")");
}

std::string gnuplot_script(const Figure& figure) {
    check_range(figure);
    std::ostringstream script;
    script << "set encoding utf8\n"
              "set terminal svg size 720,420 dynamic noenhanced font 'Helvetica,14' linewidth 1 background '#ffffff'\n"
              "set border 3 linecolor rgb '#555555'\n"
              "set tics nomirror textcolor rgb '#333333'\n"
              "set grid back linecolor rgb '#e5e5e5' linewidth 1 dashtype solid\n"
              "set key below horizontal reverse Left samplen 2 spacing 1.2 width 2\n"
              "set title "
           << gnuplot_quote(figure.title) << " font 'Helvetica,16'\n"
           << "set xlabel " << gnuplot_quote(figure.xlabel) << "\n"
           << "set ylabel " << gnuplot_quote(figure.ylabel) << "\n";
    if (figure.log_x) script << "set logscale x 10\n";
    if (figure.log_y) script << "set logscale y 10\n";

    std::vector<std::string> bands, lines;
    bool any_point = false;
    for (size_t index = 0; index < figure.series.size(); ++index) {
        const Series& series = figure.series[index];
        check_series(figure, series);
        const std::string colour = palette[index % palette.size()];
        const size_t dash = index / palette.size() % 4 + 1;

        std::ostringstream points;
        size_t count = 0;
        for (size_t i = 0; i < series.x.size(); ++i)
            if (usable(series.x[i], figure.log_x) && usable(series.y[i], figure.log_y)) {
                points << number_text(series.x[i]) << ' ' << number_text(series.y[i]) << '\n';
                ++count;
            }
        const std::string title = series.label.empty() ? "notitle" : "title " + gnuplot_quote(series.label);
        const std::string style = "linecolor rgb '" + colour + "' linewidth 2 dashtype " + std::to_string(dash);
        if (count == 0) {
            // Keeps the legend entry of a series that has no point to draw.
            lines.push_back("NaN with lines " + style + " " + title);
        } else {
            any_point = true;
            const std::string name = "$series" + std::to_string(index);
            script << name << " << EOD\n" << points.str() << "EOD\n";
            const char* with = count <= max_points_without_markers ? "linespoints pointtype 7 pointsize 0.6"
                                                                   : "lines";
            lines.push_back(name + " using 1:2 with " + with + " " + style + " " + title);
        }

        if (series.low.empty()) continue;
        std::ostringstream band;
        size_t band_count = 0;
        for (size_t i = 0; i < series.x.size(); ++i)
            if (usable(series.x[i], figure.log_x) && usable(series.low[i], figure.log_y) &&
                usable(series.high[i], figure.log_y)) {
                band << number_text(series.x[i]) << ' ' << number_text(series.low[i]) << ' '
                     << number_text(series.high[i]) << '\n';
                ++band_count;
            }
        if (band_count == 0) continue;
        const std::string name = "$band" + std::to_string(index);
        script << name << " << EOD\n" << band.str() << "EOD\n";
        bands.push_back(name + " using 1:2:3 with filledcurves fillcolor rgb '" + colour +
                        "' fillstyle transparent solid 0.2 noborder notitle");
        any_point = true;
    }

    const std::string y_low = figure.y_min ? number_text(*figure.y_min) : "*";
    const std::string y_high = figure.y_max ? number_text(*figure.y_max) : "*";
    script << "set yrange [" << y_low << ":" << y_high << "]\n";
    if (!any_point) {
        // gnuplot refuses to autoscale an empty plot: give it a range and say why it is empty.
        // A missing bound is put one decade (log) or one unit (linear) from the given one.
        script << "set xrange [" << (figure.log_x ? "1:10" : "0:1") << "]\n";
        double low = figure.log_y ? 1 : 0, high = figure.log_y ? 10 : 1;
        if (figure.y_min) {
            low = *figure.y_min;
            high = figure.y_max ? *figure.y_max : (figure.log_y ? low * 10 : low + 1);
        } else if (figure.y_max) {
            high = *figure.y_max;
            low = figure.log_y ? high / 10 : high - 1;
        }
        script << "set yrange [" << number_text(low) << ":" << number_text(high) << "]\n";
        script << "set label 1 'no data' at graph 0.5, graph 0.5 center textcolor rgb '#777777'\n";
        if (lines.empty()) lines.push_back("NaN notitle");
    }

    // Bands first, so that every line is drawn over every band.
    script << "plot ";
    bool first = true;
    for (const auto* group : {&bands, &lines})
        for (const std::string& item : *group) {
            script << (first ? "" : ", \\\n     ") << item;
            first = false;
        }
    script << "\n";
    return script.str();
}

// Runs gnuplot on the script; returns what it wrote to standard output.
std::string run_gnuplot(const std::string& script) {
    const TemporaryDirectory directory;
    const std::string script_path = (directory.path() / "figure.gp").string();
    const std::string svg_path = (directory.path() / "figure.svg").string();
    const std::string error_path = (directory.path() / "gnuplot.err").string();
    {
        std::ofstream out(script_path, std::ios::binary);
        out << script;
        if (!out.flush()) throw std::runtime_error("cannot write the gnuplot script " + script_path);
    }

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, svg_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, error_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::string program = "gnuplot";
    std::vector<char*> argv = {program.data(), const_cast<char*>(script_path.c_str()), nullptr};
    pid_t pid = 0;
    const int spawn_error = ::posix_spawnp(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    const std::string missing = "gnuplot was not found on PATH; the report draws its figures with it: "
                                "install gnuplot-nox (apt-get install gnuplot-nox)";
    if (spawn_error == ENOENT) throw std::runtime_error(missing);
    if (spawn_error != 0) throw std::runtime_error(std::string("cannot run gnuplot: ") + std::strerror(spawn_error));

    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) throw std::runtime_error(std::string("waiting for gnuplot: ") + std::strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) throw std::runtime_error(missing);
    std::string errors = read_whole_file(error_path);
    while (!errors.empty() && (errors.back() == '\n' || errors.back() == ' ')) errors.pop_back();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw std::runtime_error("gnuplot failed (" +
                                 (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                                    : "killed by signal " + std::to_string(WTERMSIG(status))) +
                                 "): " + (errors.empty() ? "no error output" : errors));
    std::string svg = read_whole_file(svg_path);
    if (svg.find("<svg") == std::string::npos)
        throw std::runtime_error("gnuplot wrote no SVG: " + (errors.empty() ? "no error output" : errors));
    return svg;
}

// Starts every id, and every local reference to one (href="#x", xlink:href='#x', url(#x)), with
// prefix, so that several SVGs inlined in one HTML page do not resolve each other's ids.
std::string prefix_ids(const std::string& svg, const std::string& prefix) {
    std::string out;
    out.reserve(svg.size() + 64 * prefix.size());
    const auto starts_with = [&](size_t at, std::string_view what) { return svg.compare(at, what.size(), what) == 0; };
    for (size_t i = 0; i < svg.size(); ++i) {
        const bool after_space = i > 0 && std::isspace(static_cast<unsigned char>(svg[i - 1]));
        if (after_space && starts_with(i, "id=") && i + 3 < svg.size() && (svg[i + 3] == '"' || svg[i + 3] == '\'')) {
            out.append(svg, i, 4);
            out += prefix;
            i += 3;
        } else if (starts_with(i, "href=") && i + 6 < svg.size() && (svg[i + 5] == '"' || svg[i + 5] == '\'') &&
                   svg[i + 6] == '#') {
            out.append(svg, i, 7);
            out += prefix;
            i += 6;
        } else if (starts_with(i, "url(#")) {
            out += "url(#";
            out += prefix;
            i += 4;
        } else {
            out += svg[i];
        }
    }
    return out;
}

// gnuplot's document as markup to inline in HTML: from <svg to </svg>, the XML prolog and
// DOCTYPE dropped, the generic <title>Gnuplot</title> replaced by the figure's title.
std::string inline_svg(const std::string& document, const Figure& figure) {
    const size_t begin = document.find("<svg");
    const size_t end = document.rfind("</svg>");
    if (begin == std::string::npos || end == std::string::npos || end < begin)
        throw std::runtime_error("gnuplot wrote an incomplete SVG for figure '" + figure.title + "'");
    std::string svg = document.substr(begin, end + 6 - begin);
    const std::string label = html_escape(figure.title.empty() ? "figure" : figure.title);
    svg.insert(4, " role=\"img\" aria-label=\"" + label + "\"");
    const std::string generic_title = "<title>Gnuplot</title>";
    if (const size_t at = svg.find(generic_title); at != std::string::npos)
        svg.replace(at, generic_title.size(), "<title>" + label + "</title>");
    return svg;
}

// ---- HTML -----------------------------------------------------------------------------------------

constexpr std::string_view style_sheet = R"css(
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1d2330;
       font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 960px; margin: 0 auto; padding: 32px 40px 56px; background: #fff; min-height: 100vh;
       box-shadow: 0 0 0 1px #e2e5ea; }
h1 { font-size: 1.9em; line-height: 1.25; margin: 0 0 .3em; }
h2 { font-size: 1.35em; margin: 1.8em 0 .6em; padding-bottom: .25em; border-bottom: 1px solid #e2e5ea; }
p { margin: .6em 0; }
a { color: #1f5fbf; }
pre { background: #f3f4f6; border: 1px solid #e2e5ea; border-radius: 6px; padding: 12px 14px; margin: .6em 0;
      white-space: pre-wrap; overflow-wrap: anywhere;
      font: 14px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
.table-wrap { overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: .94em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0 0 .45em; }
th, td { padding: 6px 14px; border-bottom: 1px solid #e2e5ea; text-align: left; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; border-bottom: 2px solid #cfd4db; }
tbody tr:nth-child(even) td { background: #fafbfc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.about th { background: none; border-bottom: 1px solid #e2e5ea; width: 1%; white-space: nowrap; }
table.settings td:first-child { font-family: ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
figure { margin: 1.6em 0; }
figure svg { display: block; width: 100%; max-width: 720px; height: auto; margin: 0 auto; }
figcaption { color: #4b5463; font-size: .92em; margin: .5em auto 0; max-width: 720px; }
footer { margin-top: 3em; color: #7a8290; font-size: .85em; }
)css";

void write_table(std::ostringstream& html, const Table& table, const char* css_class = nullptr) {
    size_t columns = table.header.size();
    for (const auto& row : table.rows) columns = std::max(columns, row.size());
    html << "<div class=\"table-wrap\"><table" << (css_class ? std::string(" class=\"") + css_class + "\"" : "")
         << ">\n";
    if (!table.caption.empty()) html << "<caption>" << html_escape(table.caption) << "</caption>\n";
    // A column is right-aligned, header included, when all its non-empty cells are numbers.
    std::vector<bool> numeric(columns, !table.rows.empty());
    for (size_t column = 0; column < columns; ++column)
        for (const auto& row : table.rows)
            if (column < row.size() && !row[column].empty() && !looks_numeric(row[column])) numeric[column] = false;
    if (!table.header.empty()) {
        html << "<thead><tr>";
        for (size_t column = 0; column < columns; ++column)
            html << (numeric[column] ? "<th class=\"num\">" : "<th>")
                 << (column < table.header.size() ? html_escape(table.header[column]) : "") << "</th>";
        html << "</tr></thead>\n";
    }
    html << "<tbody>\n";
    for (const auto& row : table.rows) {
        html << "<tr>";
        for (size_t column = 0; column < columns; ++column)
            html << (numeric[column] ? "<td class=\"num\">" : "<td>")
                 << (column < row.size() ? html_escape(row[column]) : "") << "</td>";
        html << "</tr>\n";
    }
    html << "</tbody></table></div>\n";
}

}  // namespace

// ---- public -----------------------------------------------------------------------------------------

std::string render_svg(const Figure& figure, const std::string& id_prefix) {
    return prefix_ids(inline_svg(run_gnuplot(gnuplot_script(figure)), figure), id_prefix);
}

std::string render_svg(const Figure& figure) {
    static std::atomic<unsigned long> next{0};
    return render_svg(figure, "bnorm-svg" + std::to_string(next.fetch_add(1) + 1) + "-");
}

std::string render_html(const Report& report) {
    std::ostringstream html;
    const std::string title = html_escape(report.title.empty() ? "bnorm report" : report.title);
    html << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
         << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
         << "<meta name=\"generator\" content=\"bnorm\">\n"
         << "<title>" << title << "</title>\n<style>" << style_sheet << "</style>\n</head>\n<body>\n<main>\n"
         << "<h1>" << title << "</h1>\n";

    Table about;
    if (!report.date.empty()) about.rows.push_back({"Date", report.date});
    if (!report.machine.empty()) about.rows.push_back({"Machine", report.machine});
    if (!about.rows.empty()) {
        html << "<div class=\"table-wrap\"><table class=\"about\"><tbody>\n";
        for (const auto& row : about.rows)
            html << "<tr><th>" << html_escape(row[0]) << "</th><td>" << html_escape(row[1]) << "</td></tr>\n";
        html << "</tbody></table></div>\n";
    }
    Table claims{.caption = "", .header = {"claim", "experiment", "what this run measured"}, .rows = {}};
    for (const Section& section : report.sections)
        for (const Claim& c : section.claims) claims.rows.push_back({c.claim, section.heading, c.measured});
    if (!claims.rows.empty()) {
        html << "<h2>The claims, and what was measured</h2>\n";
        write_table(html, claims);
    }
    if (!report.command.empty()) html << "<h2>Command</h2>\n<pre>" << html_escape(report.command) << "</pre>\n";
    if (!report.settings.empty()) {
        Table settings{.caption = "", .header = {"setting", "value"}, .rows = {}};
        for (const auto& [name, value] : report.settings) settings.rows.push_back({name, value});
        html << "<h2>Settings</h2>\n";
        write_table(html, settings, "settings");
    }

    size_t figure_number = 0;
    for (const Section& section : report.sections) {
        html << "<section>\n";
        if (!section.heading.empty()) html << "<h2>" << html_escape(section.heading) << "</h2>\n";
        for (const std::string& paragraph : section.paragraphs) html << "<p>" << html_escape(paragraph) << "</p>\n";
        for (const Figure& figure : section.figures) {
            ++figure_number;
            html << "<figure>\n"
                 << render_svg(figure, "fig" + std::to_string(figure_number) + "-") << "\n";
            if (!figure.caption.empty())
                html << "<figcaption>Figure " << figure_number << ". " << html_escape(figure.caption)
                     << "</figcaption>\n";
            html << "</figure>\n";
        }
        for (const Table& table : section.tables) write_table(html, table);
        html << "</section>\n";
    }

    if (!report.raw_files.empty()) {
        html << "<h2>Raw data</h2>\n<ul>\n";
        for (const std::string& file : report.raw_files)
            html << "<li><a href=\"" << url_encode_path(file) << "\">" << html_escape(file) << "</a></li>\n";
        html << "</ul>\n";
    }
    html << "<footer>Written by the bnorm command.</footer>\n</main>\n</body>\n</html>\n";
    return html.str();
}

void write_report(const std::filesystem::path& path, const Report& report) {
    const std::string html = render_html(report);
    nn::write_file_atomically(path, std::as_bytes(std::span(html)));
}

std::string machine_description() {
    std::vector<std::string> parts;

    std::string cpu_model;
    long processors = 0;
    {
        std::ifstream cpuinfo("/proc/cpuinfo");
        for (std::string line; std::getline(cpuinfo, line);) {
            const size_t colon = line.find(':');
            if (colon == std::string::npos) continue;
            std::string key = line.substr(0, colon);
            while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
            std::string value = line.substr(colon + 1);
            while (!value.empty() && std::isspace(static_cast<unsigned char>(value.front()))) value.erase(0, 1);
            if (key == "processor") ++processors;
            // x86 says "model name"; some ARM kernels only "Hardware" or "Model".
            if (cpu_model.empty() && (key == "model name" || key == "Hardware" || key == "Model") && !value.empty())
                cpu_model = value;
        }
    }
    if (!cpu_model.empty()) parts.push_back(cpu_model);

    if (processors == 0) processors = static_cast<long>(std::thread::hardware_concurrency());
    if (processors > 0) {
        std::string cpus = std::to_string(processors) + " logical CPUs";
        cpu_set_t set;
        CPU_ZERO(&set);
        if (::sched_getaffinity(0, sizeof set, &set) == 0) {
            const int available = CPU_COUNT(&set);
            if (available > 0 && available < processors) cpus += " (" + std::to_string(available) + " available)";
        }
        parts.push_back(cpus);
    }

    {
        std::ifstream meminfo("/proc/meminfo");
        for (std::string key; meminfo >> key;) {
            double kib = 0;
            meminfo >> kib;
            if (key == "MemTotal:" && kib > 0) {
                std::array<char, 64> text{};
                std::snprintf(text.data(), text.size(), "%.1f GiB memory", kib / (1024.0 * 1024.0));
                parts.push_back(text.data());
                break;
            }
            meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
        }
    }

    if (utsname names{}; ::uname(&names) == 0)
        parts.push_back(std::string(names.sysname) + " " + names.release + " " + names.machine);

    std::string description;
    for (const std::string& part : parts) description += (description.empty() ? "" : ", ") + part;
    return description.empty() ? "unknown machine" : description;
}

}  // namespace bnorm::app
