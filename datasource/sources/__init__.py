"""Task sources: the Hub over ZeroMQ, the Hub's SQLite file, MongoDB."""
