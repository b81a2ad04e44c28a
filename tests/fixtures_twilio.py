"""pytest fixtures for the twilio sandbox."""
