"""Temporal activities: thin I/O against Salesforce and Twilio, grouped by system."""
