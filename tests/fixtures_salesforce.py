"""pytest fixtures for the salesforce sandbox."""
