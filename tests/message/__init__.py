"""Reading a message: MIME, encodings, archives, text, OCR, hostile and property-based cases."""
