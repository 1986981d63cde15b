"""Model sources: local directories, GGUF files, the Hub, the SmolLM2 wheel, and the store."""
