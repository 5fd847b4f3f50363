"""Applications built on the model code: the `magtkd-hf` command line, the demos, the Hub card and push, and the
tiny-component builders used by the demo, the tests and the benchmarks. Nothing in the model code imports them."""
