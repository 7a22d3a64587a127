"""Data glue: read, validate, convert, scrub, dedup, filter, split, inspect. Nothing is
dropped silently: every row read is written, rejected, removed as a duplicate or filtered,
and each of those is counted and (except written rows) recorded with its reason."""
