"""Text matching shared by the content detectors: lexicons, keywords, the prefilter, linear models."""
