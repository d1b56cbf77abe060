"""The two networks (base generator, x4 super-resolution) and their checkpoint format."""
