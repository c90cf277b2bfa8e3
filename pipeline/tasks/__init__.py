"""segpipe.tasks."""
