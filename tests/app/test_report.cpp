// The HTML report: gnuplot figures inlined as SVG, escaping, the atomic write.
// Needs the gnuplot program (Debian gnuplot-nox); the figure tests skip, saying so, without it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "report.hpp"

namespace fs = std::filesystem;
using bnorm::app::Figure;
using bnorm::app::Report;
using bnorm::app::Section;
using bnorm::app::Series;
using bnorm::app::Table;

namespace {

bool gnuplot_available() { return std::system("gnuplot --version > /dev/null 2>&1") == 0; }

#define REQUIRE_GNUPLOT()                                                                   \
    do {                                                                                    \
        if (!gnuplot_available()) GTEST_SKIP() << "gnuplot is not installed (gnuplot-nox)"; \
    } while (0)

constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();
constexpr double infinity = std::numeric_limits<double>::infinity();

Figure loss_figure() {
    Figure figure{.title = "training loss", .xlabel = "step", .ylabel = "loss", .log_y = true};
    Series bn{.label = "mlp+bn"};
    Series plain{.label = "mlp plain"};
    for (int step = 1; step <= 60; ++step) {
        const double x = step * 100.0;
        bn.x.push_back(x);
        bn.y.push_back(2.0 * std::exp(-step / 12.0) + 0.05);
        bn.low.push_back(bn.y.back() * 0.8);
        bn.high.push_back(bn.y.back() * 1.25);
        plain.x.push_back(x);
        plain.y.push_back(2.0 * std::exp(-step / 30.0) + 0.1);
    }
    figure.series = {bn, plain};
    figure.caption = "Loss over 3 seeds; the band is min to max.";
    return figure;
}

Figure accuracy_figure() {
    Figure figure{.title = "test accuracy", .xlabel = "epoch", .ylabel = "accuracy", .y_min = 0.0, .y_max = 1.0};
    for (int lr = 0; lr < 3; ++lr) {
        Series series{.label = "lr " + std::to_string(lr)};
        for (int epoch = 1; epoch <= 12; ++epoch) {
            series.x.push_back(epoch);
            series.y.push_back(0.97 - 0.5 / (epoch + lr));
        }
        figure.series.push_back(series);
    }
    return figure;
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

size_t count(const std::string& text, const std::string& what) {
    size_t found = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++found;
    return found;
}

// What follows each occurrence of marker up to the first quote or ')', e.g. the value of id="x".
std::vector<std::string> values_after(const std::string& markup, const std::string& marker) {
    std::vector<std::string> values;
    for (size_t at = markup.find(marker); at != std::string::npos; at = markup.find(marker, at + 1)) {
        const size_t begin = at + marker.size();
        values.push_back(markup.substr(begin, markup.find_first_of("\"')", begin) - begin));
    }
    return values;
}

// The values of every id="..." and id='...' attribute, with repeats.
std::multiset<std::string> ids_in(const std::string& markup) {
    std::multiset<std::string> ids;
    for (const char* space : {" ", "\t", "\n"})
        for (const char* quote : {"\"", "'"})
            for (const auto& id : values_after(markup, std::string(space) + "id=" + quote)) ids.insert(id);
    return ids;
}

// The ids that href="#x", xlink:href='#x' and url(#x) point at.
std::set<std::string> references_in(const std::string& markup) {
    std::set<std::string> references;
    for (const char* marker : {"href=\"#", "href='#", "url(#"})
        for (const auto& reference : values_after(markup, marker)) references.insert(reference);
    return references;
}

// A scratch directory removed at the end of the test.
struct ScratchDirectory {
    fs::path path;
    ScratchDirectory() {
        std::string pattern = (fs::temp_directory_path() / "bnorm-test-report-XXXXXX").string();
        path = ::mkdtemp(pattern.data());
    }
    ~ScratchDirectory() { fs::remove_all(path); }
    std::vector<std::string> entries() const {
        std::vector<std::string> names;
        for (const auto& entry : fs::directory_iterator(path)) names.push_back(entry.path().filename().string());
        return names;
    }
};

// Sets PATH for the scope of a test.
struct ScopedPath {
    std::string saved = std::getenv("PATH") ? std::getenv("PATH") : "";
    explicit ScopedPath(const std::string& path) { ::setenv("PATH", path.c_str(), 1); }
    ~ScopedPath() { ::setenv("PATH", saved.c_str(), 1); }
};

}  // namespace

// ---- render_svg -------------------------------------------------------------------------------------

TEST(RenderSvg, produces_inline_svg_with_every_series_label_and_no_xml_prolog) {
    REQUIRE_GNUPLOT();
    const std::string svg = bnorm::app::render_svg(loss_figure());
    EXPECT_EQ(svg.rfind("<svg", 0), 0u) << svg.substr(0, 200);
    EXPECT_EQ(svg.substr(svg.size() - 6), "</svg>");
    EXPECT_EQ(svg.find("<?xml"), std::string::npos);
    EXPECT_EQ(svg.find("<!DOCTYPE"), std::string::npos);
    EXPECT_EQ(svg.find("<script"), std::string::npos) << "the page must not need JavaScript";
    EXPECT_NE(svg.find("mlp+bn"), std::string::npos);
    EXPECT_NE(svg.find("mlp plain"), std::string::npos);
    EXPECT_NE(svg.find("training loss"), std::string::npos);
}

TEST(RenderSvg, escapes_markup_in_labels) {
    REQUIRE_GNUPLOT();
    Figure figure{.title = "a <b> & 'quoted' \"title\"", .xlabel = "x", .ylabel = "y"};
    figure.series.push_back({.label = "<script>alert(1)</script>", .x = {1, 2, 3}, .y = {1, 4, 9}});
    const std::string svg = bnorm::app::render_svg(figure);
    EXPECT_EQ(svg.find("<script"), std::string::npos);
    EXPECT_EQ(svg.find("<b>"), std::string::npos);
    EXPECT_NE(svg.find("&lt;script"), std::string::npos);
    EXPECT_NE(svg.find("'quoted'"), std::string::npos) << "a single quote must survive gnuplot's quoting";
}

TEST(RenderSvg, skips_nan_and_infinite_points) {
    REQUIRE_GNUPLOT();
    Figure with_gaps{.title = "t", .xlabel = "x", .ylabel = "y"};
    with_gaps.series.push_back(
        {.label = "s", .x = {1, 2, 3, not_a_number, 5, 6}, .y = {1, not_a_number, 3, 4, infinity, 6}});
    Figure without{.title = "t", .xlabel = "x", .ylabel = "y"};
    without.series.push_back({.label = "s", .x = {1, 3, 6}, .y = {1, 3, 6}});
    const std::string a = bnorm::app::render_svg(with_gaps, "p-");
    const std::string b = bnorm::app::render_svg(without, "p-");
    EXPECT_EQ(a, b) << "the NaN and infinite points must be left out, the rest drawn as if they were absent";
}

TEST(RenderSvg, draws_a_figure_with_no_finite_point_as_empty) {
    REQUIRE_GNUPLOT();
    Figure figure{.title = "diverged", .xlabel = "step", .ylabel = "loss", .log_y = true};
    figure.series.push_back({.label = "nan run", .x = {1, 2}, .y = {not_a_number, not_a_number}});
    const std::string svg = bnorm::app::render_svg(figure);
    EXPECT_NE(svg.find("no data"), std::string::npos);
    EXPECT_NE(svg.find("nan run"), std::string::npos) << "the legend keeps the series";
    Figure nothing{.title = "no series", .xlabel = "x", .ylabel = "y"};
    EXPECT_NE(bnorm::app::render_svg(nothing).find("no data"), std::string::npos);
    Figure only_y_min{.title = "only y_min", .xlabel = "x", .ylabel = "y", .y_min = 0.5};
    EXPECT_NE(bnorm::app::render_svg(only_y_min).find("no data"), std::string::npos);
    Figure only_y_max_log{.title = "only y_max", .xlabel = "x", .ylabel = "y", .log_y = true, .y_max = 0.5};
    EXPECT_NE(bnorm::app::render_svg(only_y_max_log).find("no data"), std::string::npos);
}

TEST(RenderSvg, draws_the_low_high_band_translucent) {
    REQUIRE_GNUPLOT();
    Figure figure = loss_figure();
    EXPECT_NE(bnorm::app::render_svg(figure).find("fill-opacity"), std::string::npos);
    figure.series[0].low.clear();
    figure.series[0].high.clear();
    EXPECT_EQ(bnorm::app::render_svg(figure).find("fill-opacity"), std::string::npos);
}

TEST(RenderSvg, rejects_series_whose_sizes_differ_naming_it) {
    Figure figure{.title = "sizes", .xlabel = "x", .ylabel = "y"};
    figure.series.push_back({.label = "short y", .x = {1, 2, 3}, .y = {1, 2}});
    try {
        bnorm::app::render_svg(figure);
        FAIL() << "expected std::invalid_argument";
    } catch (const std::invalid_argument& error) {
        EXPECT_NE(std::string(error.what()).find("short y"), std::string::npos) << error.what();
    }
    figure.series[0] = {.label = "half band", .x = {1, 2}, .y = {1, 2}, .low = {0, 0}, .high = {}};
    EXPECT_THROW(bnorm::app::render_svg(figure), std::invalid_argument);
    Figure log_from_zero{.title = "log", .xlabel = "x", .ylabel = "y", .log_y = true, .y_min = 0.0};
    EXPECT_THROW(bnorm::app::render_svg(log_from_zero), std::invalid_argument);
}

TEST(RenderSvg, says_to_install_gnuplot_when_it_is_missing) {
    const ScratchDirectory empty;
    const ScopedPath path(empty.path.string());
    try {
        bnorm::app::render_svg(accuracy_figure());
        FAIL() << "expected std::runtime_error";
    } catch (const std::runtime_error& error) {
        EXPECT_NE(std::string(error.what()).find("gnuplot-nox"), std::string::npos) << error.what();
    }
}

TEST(RenderSvg, passes_on_gnuplot_error_output_when_it_fails) {
    const ScratchDirectory bin;
    {
        std::ofstream fake(bin.path / "gnuplot");
        fake << "#!/bin/sh\necho 'line 7: all points y value undefined!' >&2\nexit 1\n";
    }
    fs::permissions(bin.path / "gnuplot", fs::perms::owner_all);
    const ScopedPath path(bin.path.string() + ":/usr/bin:/bin");
    try {
        bnorm::app::render_svg(accuracy_figure());
        FAIL() << "expected std::runtime_error";
    } catch (const std::runtime_error& error) {
        EXPECT_NE(std::string(error.what()).find("all points y value undefined"), std::string::npos) << error.what();
    }
}

TEST(RenderSvg, figures_rendered_separately_share_no_id) {
    REQUIRE_GNUPLOT();
    const std::string first = bnorm::app::render_svg(loss_figure());
    const std::string second = bnorm::app::render_svg(loss_figure());
    const auto first_ids = ids_in(first);
    const auto second_ids = ids_in(second);
    ASSERT_FALSE(first_ids.empty()) << "gnuplot's SVG has ids; without any this test proves nothing";
    for (const auto& id : first_ids) EXPECT_EQ(second_ids.count(id), 0u) << id;
}

// ---- render_html ------------------------------------------------------------------------------------

TEST(RenderHtml, two_inline_figures_have_unique_ids_and_resolve_their_own_references) {
    REQUIRE_GNUPLOT();
    Report report{.title = "two figures", .command = "bnorm compare"};
    report.sections.push_back({.heading = "Curves", .figures = {loss_figure(), accuracy_figure()},
                               .tables = {}});
    const std::string html = bnorm::app::render_html(report);
    EXPECT_EQ(count(html, "<svg"), 2u);
    const auto ids = ids_in(html);
    ASSERT_GT(ids.size(), 10u);
    for (const auto& id : ids) EXPECT_EQ(ids.count(id), 1u) << "id '" << id << "' appears more than once";

    // Each figure's references point at ids defined in that same figure.
    const size_t split = html.find("<svg", html.find("<svg") + 1);
    const std::string first = html.substr(0, split);
    const std::string second = html.substr(split);
    for (const auto* part : {&first, &second}) {
        const auto own = ids_in(*part);
        const auto references = references_in(*part);
        ASSERT_FALSE(references.empty());
        for (const auto& reference : references) EXPECT_EQ(own.count(reference), 1u) << reference;
    }
    EXPECT_EQ(html.find("<?xml"), std::string::npos);
}

TEST(RenderHtml, escapes_markup_in_every_text) {
    const std::string evil = "<script>alert(1)</script>";
    Report report{.title = evil,
                  .command = "bnorm train --name '" + evil + "' && echo \"done\"",
                  .settings = {{evil, evil}},
                  .date = evil,
                  .machine = evil,
                  .sections = {},
                  .raw_files = {evil + ".csv"}};
    report.sections.push_back({.heading = evil,
                               .paragraphs = {evil, "a < b & c > d"},
                               .figures = {},
                               .tables = {{.caption = evil, .header = {evil}, .rows = {{evil}, {"1.5"}}}}});
    const std::string html = bnorm::app::render_html(report);
    EXPECT_EQ(html.find("<script"), std::string::npos);
    EXPECT_EQ(html.find("alert(1)</"), std::string::npos);
    EXPECT_GE(count(html, "&lt;script&gt;alert(1)&lt;/script&gt;"), 9u);
    EXPECT_NE(html.find("a &lt; b &amp; c &gt; d"), std::string::npos);
    EXPECT_NE(html.find("&#39;"), std::string::npos);
    EXPECT_NE(html.find("&quot;done&quot;"), std::string::npos);
}

TEST(RenderHtml, opens_with_every_sections_claims_beside_what_was_measured_escaped) {
    Report report{.title = "claims"};
    report.sections.push_back({.heading = "first", .claims = {{"faster <training>", "14,333 vs 18,333 steps"}}});
    report.sections.push_back({.heading = "second", .claims = {{"higher rates", "x5: BN 87.7%, no BN stalls"},
                                                                {"smoother", "0.38 vs 0.49"}}});
    report.sections.push_back({.heading = "no claims here"});
    const std::string html = bnorm::app::render_html(report);
    const size_t table = html.find("The claims, and what was measured");
    ASSERT_NE(table, std::string::npos);
    EXPECT_LT(table, html.find("<h2>first</h2>"));  // before the sections
    for (const char* text : {"faster &lt;training&gt;", "14,333 vs 18,333 steps", "x5: BN 87.7%, no BN stalls", "0.38 vs 0.49"})
        EXPECT_NE(html.find(text), std::string::npos) << text;
    EXPECT_EQ(count(html, "<td>second</td>"), 2u);  // the experiment of each claim
    EXPECT_EQ(bnorm::app::render_html(Report{.title = "none"}).find("The claims"), std::string::npos);
}

TEST(RenderHtml, contains_command_settings_date_machine_and_raw_file_links) {
    Report report{.title = "BN on MNIST",
                  .command = "bnorm train --model mlp --bn on --seeds 3",
                  .settings = {{"model", "mlp+bn"}, {"learning_rate", "0.1"}, {"momentum", "0.9"}},
                  .date = "2025-03-01 10:20:30",
                  .machine = "Test CPU, 4 logical CPUs",
                  .sections = {},
                  .raw_files = {"metrics.csv", "runs/seed 1.jsonl", "javascript:alert(1)"}};
    const std::string html = bnorm::app::render_html(report);
    EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
    EXPECT_NE(html.find("<pre>bnorm train --model mlp --bn on --seeds 3</pre>"), std::string::npos);
    EXPECT_NE(html.find("<td>learning_rate</td><td>0.1</td>"), std::string::npos);
    EXPECT_NE(html.find("<td>momentum</td><td>0.9</td>"), std::string::npos);
    EXPECT_NE(html.find("2025-03-01 10:20:30"), std::string::npos);
    EXPECT_NE(html.find("Test CPU, 4 logical CPUs"), std::string::npos);
    EXPECT_NE(html.find("<a href=\"metrics.csv\">metrics.csv</a>"), std::string::npos);
    EXPECT_NE(html.find("<a href=\"runs/seed%201.jsonl\">"), std::string::npos);
    EXPECT_EQ(html.find("href=\"javascript:"), std::string::npos) << "a raw file name must stay a relative link";
    EXPECT_NE(html.find("<style>"), std::string::npos);
    EXPECT_EQ(html.find("<link"), std::string::npos) << "the page must need no external file";
}

TEST(RenderHtml, pads_short_table_rows_and_right_aligns_number_columns) {
    Report report{.title = "t"};
    report.sections.push_back({.heading = "Results",
                               .tables = {{.caption = "final", .header = {"model", "acc", "time"},
                                           .rows = {{"mlp+bn", "0.981", "12%"}, {"mlp"}}}}});
    const std::string html = bnorm::app::render_html(report);
    EXPECT_NE(html.find("<th>model</th><th class=\"num\">acc</th><th class=\"num\">time</th>"), std::string::npos)
        << html;
    EXPECT_NE(html.find("<tr><td>mlp</td><td class=\"num\"></td><td class=\"num\"></td></tr>"), std::string::npos);
    EXPECT_NE(html.find("<td class=\"num\">0.981</td>"), std::string::npos);
}

// ---- write_report -----------------------------------------------------------------------------------

TEST(WriteReport, replaces_the_file_and_leaves_no_temporary_file) {
    const ScratchDirectory directory;
    const fs::path path = directory.path / "report.html";
    Report report{.title = "first"};
    bnorm::app::write_report(path, report);
    report.title = "second";
    bnorm::app::write_report(path, report);
    EXPECT_EQ(read_file(path), bnorm::app::render_html(report));
    EXPECT_EQ(directory.entries(), std::vector<std::string>{"report.html"});
}

TEST(WriteReport, missing_directory_throws_naming_the_path) {
    const ScratchDirectory directory;
    const fs::path path = directory.path / "no such directory" / "report.html";
    try {
        bnorm::app::write_report(path, Report{});
        FAIL() << "expected std::runtime_error";
    } catch (const std::runtime_error& error) {
        EXPECT_NE(std::string(error.what()).find(path.string()), std::string::npos) << error.what();
    }
    EXPECT_TRUE(directory.entries().empty());
}

TEST(WriteReport, failure_keeps_the_old_file_and_leaves_no_temporary_file) {
    const ScratchDirectory directory;
    const fs::path path = directory.path / "report.html";
    { std::ofstream(path) << "old report"; }

    // Fails while rendering: a malformed figure.
    Report report{.title = "new"};
    Figure broken{.title = "broken", .xlabel = "x", .ylabel = "y"};
    broken.series.push_back({.label = "s", .x = {1, 2}, .y = {1}});
    report.sections.push_back({.heading = "h", .figures = {broken}});
    EXPECT_THROW(bnorm::app::write_report(path, report), std::invalid_argument);
    EXPECT_EQ(read_file(path), "old report");

    // Fails at the rename: the target is a directory that is not empty.
    const fs::path occupied = directory.path / "occupied";
    fs::create_directory(occupied);
    { std::ofstream(occupied / "keep") << "x"; }
    try {
        bnorm::app::write_report(occupied, Report{.title = "new"});
        FAIL() << "expected std::runtime_error";
    } catch (const std::runtime_error& error) {
        EXPECT_NE(std::string(error.what()).find(occupied.string()), std::string::npos) << error.what();
    }
    EXPECT_EQ(read_file(occupied / "keep"), "x");
    auto names = directory.entries();
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"occupied", "report.html"})) << "a temporary file was left behind";
}

TEST(WriteReport, a_write_that_fails_halfway_keeps_the_old_file) {
    const ScratchDirectory directory;
    const fs::path path = directory.path / "report.html";
    { std::ofstream(path) << "old report"; }
    Report report{.title = "new", .command = std::string(4096, 'x')};
    ASSERT_GT(bnorm::app::render_html(report).size(), 2048u);

    // A child process that may write files of at most 1 KiB: the write of the page fails with
    // EFBIG part way through. Exit status 0: it threw a std::runtime_error naming the path.
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::signal(SIGXFSZ, SIG_IGN);
        const rlimit limit{.rlim_cur = 1024, .rlim_max = RLIM_INFINITY};
        if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(3);
        try {
            bnorm::app::write_report(path, report);
        } catch (const std::runtime_error& error) {
            ::_exit(std::string(error.what()).find(path.string()) != std::string::npos ? 0 : 1);
        }
        ::_exit(2);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the message does not name the path; 2: no exception; 3: setrlimit failed";
    EXPECT_EQ(read_file(path), "old report");
    EXPECT_EQ(directory.entries(), std::vector<std::string>{"report.html"}) << "a temporary file was left behind";
}

// ---- machine_description ------------------------------------------------------------------------------

TEST(MachineDescription, names_cpus_memory_and_kernel) {
    const std::string description = bnorm::app::machine_description();
    EXPECT_NE(description.find("logical CPUs"), std::string::npos) << description;
    EXPECT_NE(description.find("GiB memory"), std::string::npos) << description;
    EXPECT_NE(description.find("Linux"), std::string::npos) << description;
}
