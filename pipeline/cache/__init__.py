"""segpipe.cache."""
