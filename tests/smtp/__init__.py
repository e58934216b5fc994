"""The SMTP front end: relaying, the DATA reader, workers, XFORWARD, SMTP-side security."""
