"""Local servers that speak Salesforce's and Twilio's real wire formats (zero-credential demo, tests, benchmarks)."""
