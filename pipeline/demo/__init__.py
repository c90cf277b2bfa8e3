"""segpipe.demo."""
