"""Scoring models on tasks: multiple choice, exact match, perplexity."""
