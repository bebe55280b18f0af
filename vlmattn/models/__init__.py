"""Models the pipeline builds itself (offline), in real transformers architectures."""
