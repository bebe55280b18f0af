"""Image sources: the synthetic shapes set and user-supplied files."""
