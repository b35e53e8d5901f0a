"""SQL text: statement summaries, redaction, error types. No pool library, no backend."""
