"""vcc-bot: links Vonage Contact Center accounts to Salesforce orgs from Slack."""
