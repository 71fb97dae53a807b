// Parallel jobs: every job runs once with its share of the threads, the thread count comes back (also
// after a job throws), and parallel jobs' lines reach the shared stream whole.
#include <algorithm>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "xdq/parallel.h"
#include "xdq/progress.h"

using namespace xdq;

TEST(Parallel, JobsRunOnceEachWithTheirShareOfTheThreads) {
  at::set_num_threads(2);
  std::mutex m;
  std::vector<int> seen;
  std::set<int> threads_seen;
  run_jobs(9, 2, 2, [&](std::size_t i) {
    std::lock_guard<std::mutex> lock(m);
    seen.push_back(static_cast<int>(i));
    threads_seen.insert(at::get_num_threads());
  });
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
#ifdef XDQ_TEST_HAVE_TBB
  EXPECT_EQ(threads_seen, std::set<int>{1});  // 2 threads / 2 jobs
#endif
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_THROW(run_jobs(4, 2, 2, [](std::size_t i) { if (i == 2) throw std::runtime_error("job 2"); }), std::runtime_error);
  EXPECT_EQ(at::get_num_threads(), 2);
}

TEST(Parallel, SharedLineStreamKeepsLinesWhole) {
  std::ostringstream shared;
  std::mutex mutex;
  auto writer = [&](char name) {
    SharedLineStream out(shared, mutex);
    for (int i = 0; i < 500; ++i) out << name << " line " << i << " of this job" << (i % 2 ? "\n" : "\r");
    out << name << " unfinished";  // written as a line of its own when the stream ends
  };
  std::thread a(writer, 'A'), b(writer, 'B');
  a.join();
  b.join();
  const std::string text = shared.str();
  std::string line;
  int count[2] = {0, 0};
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\n' && text[i] != '\r') continue;
    line = text.substr(start, i - start);
    start = i + 1;
    ASSERT_TRUE(line.size() >= 1 && (line[0] == 'A' || line[0] == 'B')) << line;
    const std::string rest = line.substr(1);
    if (rest != " unfinished") {
      ASSERT_EQ(rest.rfind(" line ", 0), 0u) << line;
      ASSERT_NE(rest.find(" of this job"), std::string::npos) << line;
    }
    ++count[line[0] - 'A'];
  }
  EXPECT_EQ(start, text.size());
  EXPECT_EQ(count[0], 501);
  EXPECT_EQ(count[1], 501);
}

// In a log (not a terminal) a short evaluation pass leaves no line; a finished bar leaves one final line.
TEST(ProgressBar, ShortPassesLeaveNoLineInALog) {
  std::ostringstream log;
  {
    xdq::ProgressBar bar(&log, "evaluation", 100);
    bar.update(50, "1000 img/s");
    bar.finish_if_long("1000 img/s");
  }
  EXPECT_EQ(log.str(), "");
  xdq::ProgressBar bar(&log, "rounding", 10);
  bar.finish("done");
  const std::string text = log.str();
  EXPECT_EQ(text.rfind("rounding [####################] 100% done  ", 0), 0u) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
}
