"""Everything the relay keeps in Redis, each format written and read in one module."""
