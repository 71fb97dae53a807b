// Test library without the xdq_plugin entry symbol.
extern "C" int xdq_test_not_a_plugin() { return 42; }
