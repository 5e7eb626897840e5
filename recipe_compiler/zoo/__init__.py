"""A tiny trained model family (base + fine-tunes) and its evaluation tasks."""
