"""Metrics computed on site: per-video values, summarised over videos with cluster-bootstrap CIs."""
