"""Top-K lists: the item index, taste vectors, trending and transitions, the ranker."""
