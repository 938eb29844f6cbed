// progress.hpp: the progress line the `bnorm` command shows while it trains or benchmarks.
//
// On a terminal, one line redrawn in place with '\r' (bar, percentage, step/total, statistics,
// steps/s, time left), at most ten times a second. Otherwise (a log file, a pipe, CI) plain
// lines, one per 5% of progress at most every 2 s, and at least one every 30 s while updates come.
//
//   bnorm::app::Progress progress("train mlp+bn", steps);
//   for (int64_t step = 1; step <= steps; ++step) {
//       ...;
//       progress.update(step, {{"loss", loss}, {"acc", accuracy}});
//   }
//   progress.finish("best acc 0.9812 at step 41000");
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace bnorm::app {

class Progress {
public:
    using Clock = std::function<std::chrono::steady_clock::time_point()>;

    // total <= 0 means the number of steps is unknown: no bar, no percentage, no time left.
    // is_tty unset: whether out is a terminal. now unset: std::chrono::steady_clock::now (tests
    // pass a fake clock). The rate, and so the time left, is the average since construction.
    Progress(std::string label, int64_t total, std::FILE* out = stderr, std::optional<bool> is_tty = std::nullopt,
             Clock now = {});
    // Ends a half-drawn terminal line, so that what is printed next starts on a line of its own.
    ~Progress();
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    // Records that done steps (of total) are complete, with the latest statistics, and redraws
    // or logs when the rate limit allows; on a terminal, done >= total is always drawn. done
    // outside [0, total] is shown as it is and counts as 0% or 100%. Ignored after finish().
    void update(int64_t done, const std::vector<std::pair<std::string, double>>& stats);

    // Draws the final state once, with the elapsed time and the average rate, and the summary
    // (if any) at the end of the line; ends the line. Later calls do nothing.
    void finish(const std::string& summary = "");

private:
    std::string terminal_line(double elapsed_seconds, bool final) const;
    std::string log_line(double elapsed_seconds, bool final) const;
    void draw_terminal(const std::string& line);
    double seconds_since(std::chrono::steady_clock::time_point start) const;

    std::string label_;
    int64_t total_;
    std::FILE* out_;
    bool tty_;
    Clock now_;
    std::chrono::steady_clock::time_point start_;
    std::optional<std::chrono::steady_clock::time_point> last_output_;
    int64_t done_ = 0;
    std::vector<std::pair<std::string, double>> stats_;
    int next_percent_;          // the log prints a line once this percentage is reached
    size_t drawn_width_ = 0;    // characters of the line now on the terminal, 0 when none
    bool finished_ = false;
};

}  // namespace bnorm::app
