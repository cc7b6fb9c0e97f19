"""The site console: the data owner's web pages over the same functions the `site_node` commands call."""
