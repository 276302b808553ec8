"""The unit tests' shared helpers (``damage``) are imported from this directory."""
