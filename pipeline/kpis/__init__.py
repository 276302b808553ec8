"""Business KPIs in event time: per-window counts a partition computes and a combiner adds up."""
