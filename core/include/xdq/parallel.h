#pragma once
// Threads: LibTorch defaults to one intra-op thread on small machines, so xdq always sets the count; and
// independent jobs (runs of an experiment) sharing that budget.
#include <cstddef>
#include <functional>
#include <iosfwd>
#include <mutex>
#include <ostream>
#include <string>

namespace xdq {

// 0 means all hardware threads. Returns the count in effect. Every engine's entry calls it, so it also
// calls keep_freed_memory().
int apply_thread_count(int requested);
// Freed blocks of up to 32 MiB stay in the process for the next allocation instead of going back to the
// system (glibc's default), which made every new activation page-fault: 10-30 % of a reconstruction
// iteration's time, a third of a long run's. Process-wide, once.
void keep_freed_memory();
// Gives the freed blocks kept that way back to the system (malloc_trim): at the end of a pass over many
// batches (the statistics pass, a test domain), whose freed blocks lie scattered between the ones still
// held and would otherwise stay resident through every later pass (1.1 GB after vit_b_16's statistics
// pass). A pass then costs one page fault per page it reuses from the system, once.
void release_freed_memory();

// body(0) ... body(n - 1), `jobs` at a time on a TBB arena, each job with threads / jobs intra-op
// threads; `threads` is in effect again afterwards. In order on the calling thread when jobs is 1 or
// xdq was built without TBB. The first exception a job throws is rethrown once all jobs have ended.
void run_jobs(std::size_t n, int jobs, int threads, const std::function<void(std::size_t)>& body);
// Whether run_jobs can run jobs at the same time (xdq built with TBB).
bool parallel_jobs_available();

// f(0) ... f(n - 1) on all cores (TBB), for independent work outside LibTorch (decoding image files);
// in order on the calling thread without TBB.
void for_each_parallel(std::size_t n, const std::function<void(std::size_t)>& f);

// The largest resident memory of this process so far (getrusage), in MiB.
double peak_resident_mib();

// A stream for one of several parallel jobs: each whole line ('\n' or '\r' ended) reaches `shared` under
// `mutex`, so lines of parallel jobs never interleave mid-line.
class SharedLineStream : public std::ostream {
 public:
  SharedLineStream(std::ostream& shared, std::mutex& mutex) : std::ostream(&buffer_), buffer_(shared, mutex) {}
  ~SharedLineStream() override;  // a last unfinished line is written with a '\n'

 private:
  class Buffer : public std::streambuf {  // unbuffered: every character reaches overflow()
   public:
    Buffer(std::ostream& shared, std::mutex& mutex) : shared_(shared), mutex_(mutex) {}
    int_type overflow(int_type c) override;
    void emit();
    bool line_pending() const { return !line_.empty(); }

   private:
    std::ostream& shared_;
    std::mutex& mutex_;
    std::string line_;
  };
  Buffer buffer_;
};

}  // namespace xdq
