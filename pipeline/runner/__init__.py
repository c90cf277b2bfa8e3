"""segpipe.runner."""
