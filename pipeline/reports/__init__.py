"""segpipe.reports."""
