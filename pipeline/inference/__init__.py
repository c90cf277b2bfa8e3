"""segpipe.inference."""
