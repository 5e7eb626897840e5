"""Other tools' formats, converted exactly or not at all: `mergekit` (YAML configs)."""
