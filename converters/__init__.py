"""segpipe: converters."""
