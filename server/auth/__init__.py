"""Who is asking: accounts, sessions, API tokens and the role × area permission check."""
