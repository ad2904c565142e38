"""SQLite storage: the artist index, the model registry and chat history, in one file."""
