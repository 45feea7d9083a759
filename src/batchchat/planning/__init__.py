"""Planning: read the input and render each row into the exact Chat Completions request to send."""
