"""Who may talk to the agent (pairing, users and roles), what its tools may do (approvals), and keeping
secrets out of logs and chats."""
