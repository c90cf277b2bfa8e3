"""segpipe: evaluators."""
