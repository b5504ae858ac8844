"""Which configuration is in effect, how it is loaded and the rules it must follow."""
