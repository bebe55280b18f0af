"""Visual-token pruning of the language model's input: which vision tokens to keep, and runs of the
model with the others removed or masked (:mod:`.online`)."""
