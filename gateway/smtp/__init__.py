"""The SMTP front end: the aiosmtpd server and the DATA reader."""
