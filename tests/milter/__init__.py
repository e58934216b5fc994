"""The milter front end and a real Postfix in both modes."""
