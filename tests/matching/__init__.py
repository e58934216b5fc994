"""The shared text matching: the lexicon compiler and the shared scan."""
