"""Offline runs of the online core: evaluation over event files, MovieLens, the runner."""
