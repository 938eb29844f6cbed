// The progress line: terminal redraws with '\r', plain rate-limited log lines otherwise. A fake
// clock makes every timing exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "progress.hpp"

using bnorm::app::Progress;
using namespace std::chrono_literals;

namespace {

// A clock that only moves when the test moves it.
struct FakeClock {
    std::shared_ptr<std::chrono::steady_clock::time_point> now =
        std::make_shared<std::chrono::steady_clock::time_point>();
    Progress::Clock clock() const {
        return [now = now] { return *now; };
    }
    void advance(std::chrono::duration<double> by) {
        *now += std::chrono::duration_cast<std::chrono::steady_clock::duration>(by);
    }
};

// A temporary file that Progress writes to and the test reads back.
struct Capture {
    std::FILE* file = std::tmpfile();
    ~Capture() { std::fclose(file); }
    std::string text() const {
        std::fflush(file);
        std::rewind(file);
        std::string out;
        for (int ch; (ch = std::fgetc(file)) != EOF;) out += static_cast<char>(ch);
        return out;
    }
};

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    size_t begin = 0;
    for (size_t end; (end = text.find('\n', begin)) != std::string::npos; begin = end + 1)
        lines.push_back(text.substr(begin, end - begin));
    if (begin < text.size()) lines.push_back(text.substr(begin));
    return lines;
}

// What a terminal would show last: the text after the final '\r', without the trailing newline.
std::string last_redraw(const std::string& text) {
    std::string last = text.substr(text.rfind('\r') + 1);
    while (!last.empty() && (last.back() == '\n' || last.back() == ' ')) last.pop_back();
    return last;
}

}  // namespace

// ---- log mode (not a terminal) ----------------------------------------------------------------------

TEST(ProgressLog, writes_plain_lines_without_carriage_returns) {
    Capture out;
    FakeClock clock;
    {
        Progress progress("train mlp+bn", 1000, out.file, false, clock.clock());
        for (int64_t step = 1; step <= 1000; ++step) {
            clock.advance(100ms);
            progress.update(step, {{"loss", 0.31}, {"acc", 0.89}});
        }
        progress.finish("best acc 0.9000");
    }
    const std::string text = out.text();
    EXPECT_EQ(text.find('\r'), std::string::npos);
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    const auto lines = lines_of(text);
    ASSERT_GE(lines.size(), 10u) << text;
    EXPECT_EQ(lines[0], "train mlp+bn: step 50/1000 (5%) loss 0.3100 acc 0.8900 10.0 steps/s, 1m35s left");
    EXPECT_EQ(lines.back(), "train mlp+bn: done 1000/1000 (100%) in 1m40s loss 0.3100 acc 0.8900 10.0 steps/s; "
                            "best acc 0.9000");
}

TEST(ProgressLog, matches_the_documented_line_format) {
    Capture out;
    FakeClock clock;
    Progress progress("train mlp+bn", 50000, out.file, false, clock.clock());
    clock.advance(4s);
    progress.update(5000, {{"loss", 0.41234}, {"acc", 0.852}});
    EXPECT_EQ(out.text(), "train mlp+bn: step 5000/50000 (10%) loss 0.4123 acc 0.8520 1250 steps/s, 36 s left\n");
}

TEST(ProgressLog, a_fast_run_logs_at_most_one_line_every_two_seconds) {
    Capture out;
    FakeClock clock;
    Progress progress("fast", 100000, out.file, false, clock.clock());
    for (int64_t step = 1; step <= 100000; ++step) {  // 10 s in all
        clock.advance(100us);
        progress.update(step, {});
    }
    progress.finish();
    const auto lines = lines_of(out.text());
    EXPECT_GE(lines.size(), 3u) << out.text();
    EXPECT_LE(lines.size(), 6u) << out.text();  // 10 s / 2 s, plus the final line
}

TEST(ProgressLog, a_slow_run_logs_every_five_percent_and_at_least_every_thirty_seconds) {
    {
        Capture out;
        FakeClock clock;
        Progress progress("medium", 100, out.file, false, clock.clock());
        for (int64_t step = 1; step <= 100; ++step) {  // 5% = 5 steps = 15 s
            clock.advance(3s);
            progress.update(step, {});
        }
        progress.finish();
        EXPECT_EQ(lines_of(out.text()).size(), 20u) << out.text();  // 5%, 10%, ..., 95%, then done
    }
    {
        Capture out;
        FakeClock clock;
        Progress progress("slow", 20, out.file, false, clock.clock());
        for (int64_t step = 1; step <= 10; ++step) {  // 5% = 1 step = 100 s: a line per step
            clock.advance(100s);
            progress.update(step, {});
        }
        EXPECT_EQ(lines_of(out.text()).size(), 10u) << out.text();
    }
    {
        Capture out;
        FakeClock clock;
        Progress progress("unknown total", 0, out.file, false, clock.clock());
        for (int64_t step = 1; step <= 300; ++step) {  // 300 s without a total: one line per 30 s
            clock.advance(1s);
            progress.update(step, {});
        }
        EXPECT_EQ(lines_of(out.text()).size(), 10u) << out.text();
    }
}

// ---- terminal mode -----------------------------------------------------------------------------------

TEST(ProgressTerminal, redraws_one_line_with_carriage_returns_and_ends_at_100_percent) {
    Capture out;
    FakeClock clock;
    {
        Progress progress("train", 50, out.file, true, clock.clock());
        for (int64_t step = 1; step <= 50; ++step) {
            clock.advance(1ms);  // too fast to redraw each step: the final state must be drawn anyway
            progress.update(step, {{"loss", 0.25}});
        }
        progress.finish("ok");
    }
    const std::string text = out.text();
    EXPECT_NE(text.find('\r'), std::string::npos);
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << "one line, ended once";
    EXPECT_EQ(text.back(), '\n');
    const std::string last = last_redraw(text);
    EXPECT_EQ(last.rfind("train [########################] 100% 50/50  loss 0.2500", 0), 0u) << last;
    EXPECT_NE(last.find("ok"), std::string::npos) << last;

    // The last update drew 100% before finish() did.
    const std::string before_finish = text.substr(0, text.rfind('\r'));
    EXPECT_NE(before_finish.substr(before_finish.rfind('\r')).find("100% 50/50"), std::string::npos) << text;
}

TEST(ProgressTerminal, redraws_at_most_ten_times_a_second) {
    Capture out;
    FakeClock clock;
    Progress progress("fast", 10000, out.file, true, clock.clock());
    for (int64_t step = 1; step < 10000; ++step) {  // 1 s in all, short of the total
        clock.advance(100us);
        progress.update(step, {});
    }
    const std::string text = out.text();
    const auto redraws = std::count(text.begin(), text.end(), '\r');
    EXPECT_GE(redraws, 9);
    EXPECT_LE(redraws, 11);
    EXPECT_EQ(text.find('\n'), std::string::npos);
}

TEST(ProgressTerminal, shows_rate_and_time_left_from_the_average_rate) {
    Capture out;
    FakeClock clock;
    Progress progress("", 100, out.file, true, clock.clock());
    clock.advance(10s);
    progress.update(10, {{"acc", 0.5}});
    EXPECT_EQ(last_redraw(out.text()), "[##----------------------]  10% 10/100  acc 0.5000  1.0 steps/s, 1m30s left");
    clock.advance(30s);
    progress.update(20, {});
    EXPECT_EQ(last_redraw(out.text()), "[####--------------------]  20% 20/100  2.00 s/step, 2m40s left");
}

TEST(ProgressTerminal, wipes_leftovers_of_a_longer_previous_line) {
    Capture out;
    FakeClock clock;
    Progress progress("p", 10, out.file, true, clock.clock());
    clock.advance(1s);
    progress.update(1, {{"a_long_statistic_name", 1.0}});
    const size_t first_length = out.text().size();
    clock.advance(1s);
    progress.update(2, {});
    const std::string text = out.text();
    EXPECT_GE(text.size() - first_length, first_length) << "the second draw must cover the first";
}

TEST(ProgressTerminal, destructor_ends_a_half_drawn_line) {
    Capture out;
    FakeClock clock;
    {
        Progress progress("p", 10, out.file, true, clock.clock());
        clock.advance(1s);
        progress.update(3, {});
    }
    const std::string text = out.text();
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
}

// ---- odd totals ----------------------------------------------------------------------------------------

TEST(ProgressOddTotals, zero_total_negative_done_and_done_past_total_do_not_crash) {
    for (const bool tty : {true, false}) {
        Capture out;
        FakeClock clock;
        {
            Progress zero("zero", 0, out.file, tty, clock.clock());
            clock.advance(40s);
            zero.update(5, {{"loss", std::numeric_limits<double>::quiet_NaN()}});
            zero.finish();
        }
        {
            Progress over("over", 10, out.file, tty, clock.clock());
            clock.advance(1s);
            over.update(-3, {});
            clock.advance(40s);
            over.update(15, {{"loss", 1e-7}});
            over.finish();
        }
        {
            Progress negative("negative", -5, out.file, tty, clock.clock());
            negative.finish();
            negative.finish();  // a second finish does nothing
            negative.update(1, {});
        }
        const std::string text = out.text();
        EXPECT_EQ(text.find("150%"), std::string::npos) << text;
        EXPECT_NE(text.find("15/10"), std::string::npos) << text;
        EXPECT_NE(text.find("100%"), std::string::npos) << text;
        EXPECT_NE(text.find("loss 1.000e-07"), std::string::npos) << text;
        EXPECT_NE(text.find("loss nan"), std::string::npos) << text;
        EXPECT_EQ(text.find("negative"), text.rfind("negative")) << "the second finish printed again: " << text;
        if (!tty) {
            EXPECT_EQ(text.find('\r'), std::string::npos);
        }
    }
}
