#pragma once
// Standard error while a run works, also kept as a terminal shows it (a progress line redrawn after '\r'
// is kept once, colour and erase sequences dropped) so the output folder gets a run.log of what was
// printed; with `quiet` it is only kept. Progress bars still see std::cerr, so they stay live on a terminal.
#include <cctype>
#include <iostream>
#include <streambuf>
#include <string>

namespace xdq::cli {

class RecordedStderr : public std::streambuf {
 public:
  explicit RecordedStderr(bool quiet) : original_(std::cerr.rdbuf()), quiet_(quiet) { std::cerr.rdbuf(this); }
  ~RecordedStderr() override { std::cerr.rdbuf(original_); }
  RecordedStderr(const RecordedStderr&) = delete;
  RecordedStderr& operator=(const RecordedStderr&) = delete;

  const std::string& text() const { return text_; }

 protected:
  int overflow(int c) override {
    if (c == traits_type::eof()) return 0;
    const char ch = static_cast<char>(c);
    if (!quiet_) original_->sputc(ch);
    record(ch);
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (!quiet_) original_->sputn(s, n);
    for (std::streamsize i = 0; i < n; ++i) record(s[i]);
    return n;
  }
  int sync() override { return quiet_ ? 0 : original_->pubsync(); }

 private:
  void record(char c) {
    if (in_escape_) {
      in_escape_ = !std::isalpha(static_cast<unsigned char>(c));  // ESC [ ... letter
      return;
    }
    if (c == '\033') {
      in_escape_ = true;
    } else if (c == '\r') {
      const auto line_start = text_.rfind('\n');
      text_.erase(line_start == std::string::npos ? 0 : line_start + 1);
    } else {
      text_ += c;
    }
  }

  std::streambuf* original_;
  bool quiet_;
  bool in_escape_ = false;
  std::string text_;
};

}  // namespace xdq::cli
