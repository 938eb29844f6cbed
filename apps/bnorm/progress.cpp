// The progress line: a redrawn bar on a terminal, rate-limited plain lines in a log.
#include "progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>

namespace bnorm::app {
namespace {

constexpr double terminal_min_interval_seconds = 0.1;  // at most ten redraws a second
constexpr double log_min_interval_seconds = 2.0;       // a log line at most every 2 s ...
constexpr double log_max_interval_seconds = 30.0;      // ... and at least every 30 s while updates come
constexpr int log_percent_step = 5;                     // ... one per 5% of progress in between
constexpr int bar_width = 24;

template <typename... Args>
std::string format(const char* pattern, Args... args) {
    std::array<char, 128> text{};
    const int length = std::snprintf(text.data(), text.size(), pattern, args...);
    return std::string(text.data(), static_cast<size_t>(std::clamp(length, 0, static_cast<int>(text.size()) - 1)));
}

std::string statistic_text(double value) {
    if (std::isnan(value)) return "nan";
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    const double magnitude = std::fabs(value);
    if (value == 0 || (magnitude >= 1e-3 && magnitude < 1e5)) return format("%.4f", value);
    return format("%.3e", value);
}

// "36 s", "12m05s", "3h02m".
std::string duration_text(double seconds, bool with_tenths) {
    if (!(seconds >= 0) || !std::isfinite(seconds)) return "?";
    if (seconds < 60) return with_tenths ? format("%.1f s", seconds) : format("%.0f s", std::ceil(seconds));
    const auto whole = static_cast<long long>(std::llround(seconds));
    if (whole < 3600) return format("%lldm%02llds", whole / 60, whole % 60);
    return format("%lldh%02lldm", whole / 3600, whole % 3600 / 60);
}

std::string rate_text(double steps_per_second) {
    if (steps_per_second >= 100) return format("%.0f steps/s", steps_per_second);
    if (steps_per_second >= 1) return format("%.1f steps/s", steps_per_second);
    return format("%.2f s/step", 1 / steps_per_second);
}

// Columns of the terminal out writes to, or 0 when unknown (a file forced into terminal mode).
size_t terminal_columns(std::FILE* out) {
    winsize size{};
    if (::ioctl(::fileno(out), TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
    return 0;
}

// The first width characters of line, not cutting a UTF-8 sequence in two.
std::string truncated(std::string line, size_t width) {
    if (width == 0 || line.size() <= width) return line;
    size_t cut = width;
    while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
    line.resize(cut);
    return line;
}

}  // namespace

Progress::Progress(std::string label, int64_t total, std::FILE* out, std::optional<bool> is_tty, Clock now)
    : label_(std::move(label)),
      total_(std::max<int64_t>(total, 0)),
      out_(out),
      tty_(is_tty.value_or(out != nullptr && ::isatty(::fileno(out)) == 1)),
      now_(now ? std::move(now) : Clock([] { return std::chrono::steady_clock::now(); })),
      start_(now_()),
      next_percent_(log_percent_step) {}

Progress::~Progress() {
    if (tty_ && drawn_width_ > 0 && !finished_ && out_ != nullptr) {
        std::fputc('\n', out_);
        std::fflush(out_);
    }
}

double Progress::seconds_since(std::chrono::steady_clock::time_point start) const {
    return std::chrono::duration<double>(now_() - start).count();
}

std::string Progress::terminal_line(double elapsed_seconds, bool final) const {
    const double rate = elapsed_seconds > 0 ? static_cast<double>(std::max<int64_t>(done_, 0)) / elapsed_seconds : 0;
    std::string line = label_.empty() ? "" : label_ + " ";
    if (total_ > 0) {
        const double fraction = std::clamp(static_cast<double>(done_) / static_cast<double>(total_), 0.0, 1.0);
        const int filled = static_cast<int>(fraction * bar_width);
        line += "[" + std::string(static_cast<size_t>(filled), '#') +
                std::string(static_cast<size_t>(bar_width - filled), '-') + "] ";
        line += format("%3d%% %lld/%lld", static_cast<int>(fraction * 100), static_cast<long long>(done_),
                       static_cast<long long>(total_));
    } else {
        line += format("step %lld", static_cast<long long>(done_));
    }
    for (const auto& [name, value] : stats_) line += "  " + name + " " + statistic_text(value);
    if (rate > 0) line += "  " + rate_text(rate);
    if (final)
        line += ", done in " + duration_text(elapsed_seconds, true);
    else if (total_ > 0 && done_ < total_ && rate > 0)
        line += ", " + duration_text(static_cast<double>(total_ - done_) / rate, false) + " left";
    return line;
}

std::string Progress::log_line(double elapsed_seconds, bool final) const {
    const double rate = elapsed_seconds > 0 ? static_cast<double>(std::max<int64_t>(done_, 0)) / elapsed_seconds : 0;
    std::string line = label_.empty() ? "" : label_ + ": ";
    line += final ? "done " : "step ";
    line += total_ > 0 ? format("%lld/%lld", static_cast<long long>(done_), static_cast<long long>(total_))
                       : format("%lld", static_cast<long long>(done_));
    if (total_ > 0) {
        const double fraction = std::clamp(static_cast<double>(done_) / static_cast<double>(total_), 0.0, 1.0);
        line += format(" (%d%%)", static_cast<int>(fraction * 100));
    }
    if (final) line += " in " + duration_text(elapsed_seconds, true);
    for (const auto& [name, value] : stats_) line += " " + name + " " + statistic_text(value);
    if (rate > 0) line += " " + rate_text(rate);
    if (!final && total_ > 0 && done_ < total_ && rate > 0)
        line += ", " + duration_text(static_cast<double>(total_ - done_) / rate, false) + " left";
    return line;
}

void Progress::draw_terminal(const std::string& line) {
    // Spaces wipe what a longer previous line left behind.
    const size_t padding = drawn_width_ > line.size() ? drawn_width_ - line.size() : 0;
    std::fputc('\r', out_);
    std::fputs(line.c_str(), out_);
    for (size_t i = 0; i < padding; ++i) std::fputc(' ', out_);
    std::fflush(out_);
    drawn_width_ = std::max<size_t>(line.size(), 1);
}

void Progress::update(int64_t done, const std::vector<std::pair<std::string, double>>& stats) {
    if (finished_ || out_ == nullptr) return;
    done_ = done;
    stats_ = stats;
    const auto now = now_();
    const double since_output = std::chrono::duration<double>(now - last_output_.value_or(start_)).count();
    const double elapsed = std::chrono::duration<double>(now - start_).count();

    if (tty_) {
        const bool complete = total_ > 0 && done_ >= total_;
        if (last_output_ && since_output < terminal_min_interval_seconds && !complete) return;
        // One column short of the width: a line that fills it would wrap, and '\r' would then
        // return to the wrapped part only.
        const size_t columns = terminal_columns(out_);
        draw_terminal(truncated(terminal_line(elapsed, false), columns > 0 ? columns - 1 : 0));
        last_output_ = now;
        return;
    }

    // The log leaves the final state to finish(), which says how long the whole run took.
    bool due = since_output >= log_max_interval_seconds;
    if (total_ > 0 && done_ < total_) {
        const auto percent = static_cast<int>(
            std::clamp(100.0 * static_cast<double>(done_) / static_cast<double>(total_), 0.0, 100.0));
        if (percent >= next_percent_ && since_output >= log_min_interval_seconds) due = true;
        if (due) next_percent_ = (percent / log_percent_step + 1) * log_percent_step;
    } else if (total_ > 0) {
        due = false;
    }
    if (!due) return;
    std::fprintf(out_, "%s\n", log_line(elapsed, false).c_str());
    std::fflush(out_);
    last_output_ = now;
}

void Progress::finish(const std::string& summary) {
    if (finished_ || out_ == nullptr) return;
    finished_ = true;
    const double elapsed = seconds_since(start_);
    if (tty_) {
        draw_terminal(terminal_line(elapsed, true) + (summary.empty() ? "" : "  " + summary));
        std::fputc('\n', out_);
    } else {
        std::fprintf(out_, "%s%s\n", log_line(elapsed, true).c_str(), summary.empty() ? "" : ("; " + summary).c_str());
    }
    std::fflush(out_);
}

}  // namespace bnorm::app
