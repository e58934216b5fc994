"""Reading a message: MIME, encodings, archives, documents, text, quoting, images, OCR."""
