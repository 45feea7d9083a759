"""Report: a run's figures built from its output directory, shown as JSON, Markdown and HTML."""
