"""flexsf: a durable, server-side Salesforce integration for Twilio Flex."""
