"""segpipe: pipeline."""
