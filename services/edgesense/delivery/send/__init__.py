"""Send: render the body, sign it and POST it, in sender processes."""
